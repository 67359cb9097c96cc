"""Wake a Celery task right after a commit that left work for it.

A nudge is only a hint: beat runs the same task every second or so, and the task works
from database rows. So a nudge must never fail or slow the request that committed, and it
must not flood the queue or Redis: under load every commit would otherwise queue a task
(the queue would outgrow the workers and, with task expiry, starve the relay) and cost a
Redis round trip. Hence:

- at most one nudge per task waits in the queue, across all processes: a Redis flag taken
  with SET NX PX before sending, expiring by itself should the message be lost;
- per process, a failed send (broker down) opens a breaker that silences nudges for a few
  seconds;
- a commit's nudges take their flags in one pipelined round trip (so do the nudges asked
  for inside a `nudges_batched()` block, for work committed without an atomic block), and
  per process a task is asked for at most once per `_DEBOUNCE_MS` after a nudge this
  process sent, and once per its quiet time (`quiet`) when its flag was found taken; when
  a commit asks Redis anyway, its other tasks past `_DEBOUNCE_MS` ride along;
- a plain task clears its flag as it starts (`nudge_clear`): a flag found set means "a
  run is queued", and work committed after that run started waits at most until this
  process's next nudge after its quiet time, or the next beat tick;
- a *covering* task (the outbox relay) keeps polling while it holds its flag and until
  the flag has expired (`NudgeCover`), renewing it while it finds work. Its flag holds a
  deadline (wall-clock ms) that every commit until then is covered by, so a process that
  finds the flag set stays quiet until that deadline: during a busy period the task keeps
  running and the web processes ask Redis about it about once per cover, not per commit.
  The deadlines are the writers' clocks, read by other hosts: a skew shows as late
  nudges (the beat tick still comes), never as lost work.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from celery import current_app
from django.conf import settings
from django.db import transaction
from django_redis import get_redis_connection

from core.breaker import Breaker

logger = logging.getLogger(__name__)

_FLAG_TTL_MS = 2000
_DEBOUNCE_MS = 200  # <= _FLAG_TTL_MS
_DEBOUNCE = _DEBOUNCE_MS / 1000
_QUIET_AFTER_FAILURE_SECONDS = 5.0
broker_breaker = Breaker(cooldown=lambda: _QUIET_AFTER_FAILURE_SECONDS)


@dataclass(frozen=True)
class _Nudge:
    quiet: float  # seconds this process leaves the task alone after asking for its flag
    covered: bool  # the task holds its flag while it works (NudgeCover)


class _PendingTasks(threading.local):
    def __init__(self) -> None:
        self.tasks: dict[str, _Nudge] = {}
        self.batches = 0  # how many nudges_batched() blocks this thread is in


_pending = _PendingTasks()
# task name -> when (time.monotonic()) this process last asked for its flag, and until
# when it leaves the task alone.
_last_asked: dict[str, float] = {}
_quiet_until: dict[str, float] = {}


def _flag_key(task_name: str) -> str:
    return f"{settings.CELERY_TASK_DEFAULT_QUEUE}:nudge:{task_name}"


def nudge_on_commit(task_name: str, *, quiet: float = _DEBOUNCE, covered: bool = False) -> None:
    """Send `task_name` once the current transaction commits (at most one queued).

    `quiet`: after asking Redis about the task, this process skips it for that long.
    `covered`: the task keeps polling while its flag stands (it uses NudgeCover with
    `quiet` as its cover); a flag found set then silences this process until the
    flag's deadline instead.

    The tasks a commit nudges take their flags in one round trip: each call adds its task
    to this thread's pending set, and the first callback after the commit takes them all
    (a task left pending by a rolled-back transaction goes with the next commit: a spare
    hint, harmless)."""
    _pending.tasks[task_name] = _Nudge(quiet=quiet, covered=covered)
    if not _pending.batches:  # (in a batch, its end sends them)
        transaction.on_commit(_nudge_pending)


@contextmanager
def nudges_batched() -> Iterator[None]:
    """Nudges asked for inside the block take their flags together, in one round trip, as
    the block ends (or as the transaction around it commits).

    For nudges asked for outside any transaction, each of which would otherwise go at once
    and on its own: the after-commit callbacks of a unit of work (core/unit_of_work.py),
    committed without an atomic block, whose nudges of several tasks go out together. A
    block left by an exception sends nothing: its nudges go with the next commit."""
    _pending.batches += 1
    try:
        yield
    finally:
        _pending.batches -= 1
    if not _pending.batches:
        transaction.on_commit(_nudge_pending)  # outside a transaction: now


def nudge_clear(task_name: str) -> None:
    """Called by a plain task as it starts: commits from now on may queue a new nudge."""
    try:
        get_redis_connection("default").delete(_flag_key(task_name))
    except Exception:  # the flag expires by itself
        logger.debug("could not clear nudge flag", exc_info=True)


def _nudge_pending() -> None:
    tasks = _pending.tasks
    if not tasks or broker_breaker.is_open:
        return
    _pending.tasks = {}
    asked_at = time.monotonic()
    if all(asked_at < _quiet_until.get(task, float("-inf")) for task in tasks):
        return  # the usual commit under load: no round trip at all
    # A round trip is due: every task of this commit not asked for a moment ago rides along.
    due = sorted(t for t in tasks if asked_at - _last_asked.get(t, float("-inf")) >= _DEBOUNCE)
    now_ms = int(time.time() * 1000)
    try:
        flags = get_redis_connection("default").pipeline(transaction=False)
        for task_name in due:
            _last_asked[task_name] = asked_at
            ttl_ms = _ttl_ms(tasks[task_name])
            # Our deadline as the value; GET: the holder's, when the flag was taken already.
            flags.set(_flag_key(task_name), now_ms + ttl_ms, nx=True, px=ttl_ms, get=True)
        held = flags.execute()
    except Exception as exc:
        broker_breaker.trip()
        logger.warning("could not nudge tasks", extra={"tasks": due, "error": type(exc).__name__})
        return
    won = []
    for task_name, holder in zip(due, held, strict=True):
        nudge = tasks[task_name]
        if holder is None:
            won.append(task_name)
            # (a covering task's run will answer with a deadline of its own: ask for it)
            quiet = min(nudge.quiet, _DEBOUNCE) if nudge.covered else nudge.quiet
        elif nudge.covered:
            # Covered until the holder's deadline: the task looks for work until then.
            quiet = min(nudge.quiet, max(0.0, (_deadline_ms(holder) - now_ms) / 1000))
        else:
            quiet = nudge.quiet
        _quiet_until[task_name] = asked_at + quiet
    _send(won)


def _ttl_ms(nudge: _Nudge) -> int:
    return int(nudge.quiet * 1000) if nudge.covered else _FLAG_TTL_MS


def _deadline_ms(value: bytes | str) -> int:
    text = value.decode() if isinstance(value, bytes) else value
    try:
        return int(text.split(":", 1)[0])
    except ValueError:  # not ours: no deadline to trust
        return 0


def _send(task_names: list[str]) -> None:
    # (a task whose flag was taken already has a nudge waiting in the queue, or runs)
    try:
        for task_name in task_names:
            # The process's Celery app (the wiring makes it current on import), by name:
            # the ground floor never imports the wiring.
            current_app.send_task(task_name, retry=False, expires=10)
    except Exception as exc:
        broker_breaker.trip()
        logger.warning(
            "could not nudge tasks", extra={"tasks": task_names, "error": type(exc).__name__}
        )


# KEYS[1]: the flag. ARGV[1]: our token, ARGV[2]: TTL (ms), ARGV[3]: our deadline (wall ms),
# ARGV[4]: "renew" or "answer". A flag another run of the task holds ("<deadline>:<token>")
# is left alone; one a web process set ("<deadline>") is a nudge waiting for an answer,
# which we are: taken. "renew" also takes a flag nobody holds and renews ours; "answer"
# leaves ours as it is. Returns for how many ms the flag is ours (0: not ours).
_TAKE_COVER = """
local value = redis.call('GET', KEYS[1])
if value then
  local holder = string.match(value, ':(.+)$')
  if holder == ARGV[1] then
    if ARGV[4] ~= 'renew' then
      return math.max(redis.call('PTTL', KEYS[1]), 0)
    end
  elseif holder then
    return 0
  end
elseif ARGV[4] ~= 'renew' then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3] .. ':' .. ARGV[1], 'PX', ARGV[2])
return tonumber(ARGV[2])
"""


class NudgeCover:
    """The flag of a covering task (see the module docstring), held by one of its runs.

    Web processes that find the flag stay quiet until its deadline, trusting that a run
    will look for work after any commit before it. So the holder looks once more after
    `expired` turned true before it stops, and, as it stops, answers a nudge that came
    meanwhile. Redis errors leave the cover as it was (web processes then nudge as usual
    once the deadline they saw has passed).
    """

    def __init__(self, task_name: str, *, seconds: float) -> None:
        self.key = _flag_key(task_name)
        self.seconds = seconds
        self.token = uuid.uuid4().hex
        self._expires_at = float("-inf")  # time.monotonic() by which the flag is gone

    @property
    def held(self) -> bool:
        return time.monotonic() < self._expires_at

    @property
    def expired(self) -> bool:
        """True once no web process can still be relying on our cover."""
        return not self.held

    def answer(self) -> bool:
        """Take the flag if a web process set it (its nudge is ours to answer); keep ours
        as it stands. Returns whether we hold it."""
        return self._take("answer")

    def renew(self) -> bool:
        """There is work: cover the commits to come, unless another run does. Returns
        whether we hold the flag."""
        return self._take("renew")

    def due_for_renewal(self) -> bool:
        """Renew at most a few times per cover: each renewal is a round trip."""
        return self._expires_at - time.monotonic() < self.seconds * 0.75

    def _take(self, mode: str) -> bool:
        ttl_ms = int(self.seconds * 1000)
        try:
            redis = get_redis_connection("default")
            deadline_ms = int(time.time() * 1000) + ttl_ms
            held_ms = redis.register_script(_TAKE_COVER)(
                keys=[self.key], args=[self.token, ttl_ms, deadline_ms, mode]
            )
        except Exception:
            logger.debug("could not take the nudge cover", exc_info=True)
            return self.held
        if held_ms:
            # Gone by the answer's time + its TTL at the latest (set before the answer).
            self._expires_at = time.monotonic() + int(held_ms) / 1000
        return self.held
