"""The beat scheduler: RedBeat (schedule and single-beat lock in Redis) that outlives a Redis
outage instead of exiting.

Stock RedBeat extends its lock at the start of every tick; with Redis unreachable that
raises, and `celery beat` exits. If Redis comes back empty (no persistence) RedBeat has
lost both its lock and its schedule, and would send nothing any more. Here a tick that
cannot reach Redis is skipped; once Redis answers again the lock is taken back if it is
free (if another beat holds it, this one stands by and keeps asking) and the static
schedule is written again (keeping each entry's last run where Redis still has it).
"""

from __future__ import annotations

import logging

import redis
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, RedBeatScheduler, get_redis
from redis.lock import Lock

logger = logging.getLogger(__name__)


class ResilientRedBeatScheduler(RedBeatScheduler):
    #: Seconds between attempts while Redis is unreachable or another beat holds the lock.
    retry_interval = 1.0

    _recovering = False
    # Set by RedBeat's beat_init handler, or by _recover below.
    lock: Lock | None

    def tick(self, *args, **kwargs):
        try:
            # A failed lock acquisition at start-up leaves `lock` None (Celery swallows the
            # error of the beat_init handler); RedBeat's tick would then crash on it.
            needs_recovery = self._recovering or (self.lock_key and self.lock is None)
            if needs_recovery and not self._recover():
                return self.retry_interval
            return super().tick(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not self._recovering:
                logger.warning(
                    "beat: Redis unreachable; pausing the schedule", extra={"error": str(exc)}
                )
            self._recovering = True
            return self.retry_interval
        except redis.exceptions.LockError:
            # Our lock expired or vanished (Redis restarted empty, or we were paused past
            # its timeout and another beat took over): take it back only if it is free.
            logger.warning("beat: lost the RedBeat lock; trying to take it back")
            self._recovering = True
            return self.retry_interval

    def close(self) -> None:
        try:
            super().close()  # releases the lock: needs Redis
        except (redis.ConnectionError, redis.TimeoutError):
            logger.warning("beat: Redis unreachable at shutdown; the lock will expire by itself")

    def _recover(self) -> bool:
        if self.lock_key:
            if self.lock is None:
                client = get_redis(self.app)
                self.lock = client.lock(
                    self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval
                )
                self.lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
            if not self.lock.owned() and not self.lock.acquire(blocking=False):
                self._recovering = True
                return False  # another beat is active: stand by
        self.setup_schedule()
        if self._recovering:
            logger.warning("beat: Redis reachable again; schedule resumed")
        self._recovering = False
        return True
