"""A per-process cache that other processes invalidate through Redis pub/sub, within a bound.

For data read on every request and changed rarely (API keys): a hit costs no database and
no Redis round trip. Each process keeps its entries in memory, each entry carrying a tag
(e.g. the id of the row it came from); a daemon thread, started by the first lookup (so
after a fork: one per gunicorn worker), holds a subscription to the cache's channel. A
writer calls `invalidate_on_commit(tag)`: the entries carrying the tag leave its own process
at once and, after its transaction commits, every other process at the message.

The bound. An entry is served only while the listener has proved, within the last `bound`
seconds, that it hears everything: it pings Redis on its subscription every bound/4, and
Redis answers a ping on that connection only after every message published before it. So
no process answers from an entry later than `bound` seconds after the invalidation of its
tag was published, whatever happened to its listener meanwhile (connection lost, silently
hung, reconnecting, thread starved); normally the message lands within a millisecond.
Until the listener has subscribed, and whenever its pings go unanswered, every lookup
misses (the caller reads the source) and nothing is filled. Each (re)subscription clears
the cache, so a message published while a listener was away is never needed.

Fills race invalidations: a caller takes a ticket (the cache's generation) before it reads
the source, and fills with that ticket. Every invalidation, loss and resubscription moves
the generation, so a fill whose read may predate an invalidation is dropped: an
invalidation that arrives during a fill wins.

What no message can reach: a write that never publishes (raw SQL) or a publish that never
reached Redis (logged as an error). `max_age` bounds those: no entry is served longer than
that after its fill.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

import redis
from django.db import transaction

logger = logging.getLogger(__name__)

V = TypeVar("V")

#: A message with this tag clears the whole cache of every process.
EVERY_TAG = "*"
_PINGS_PER_BOUND = 4
# A connection whose pings go unanswered this many bounds is dropped and made anew.
_UNANSWERED_BOUNDS_BEFORE_RECONNECT = 3
_FIRST_RETRY_DELAY = 0.05
_MAX_RETRY_DELAY = 2.0
_NEVER = float("-inf")


@dataclass(frozen=True)
class CacheSettings:
    channel: str  # the Redis pub/sub channel (server-wide: prefix it per deployment)
    max_entries: int  # least recently used entries go first; 0 turns the cache off
    bound: float  # seconds: the longest an invalidated entry may still be served
    max_age: float  # seconds: the longest any entry is served after its fill


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    tag: str
    expires_at: float


class InvalidatedCache(Generic[V]):
    """Entries keyed by str, each with a tag; see the module's docstring for the contract."""

    def __init__(
        self,
        *,
        name: str,
        settings: Callable[[], CacheSettings],
        redis_client: Callable[[], redis.Redis],
    ) -> None:
        self.name = name  # also the listener's Redis client name: no spaces
        self._settings = settings
        self._redis = redis_client
        self._closed = False
        # For tests and checks: how often this process's listener subscribed, and lost it.
        self.subscriptions = 0
        self.losses = 0
        self._reset()
        _instances.add(self)

    def _reset(self) -> None:
        """Empty and untrusted, with no listener (also a forked child's state: the parent's
        thread does not exist there, and its locks may have been held at the fork)."""
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry[V]] = OrderedDict()
        self._keys_by_tag: dict[str, set[str]] = {}
        self._generation = 0
        self._trusted_until = _NEVER
        self._listener: threading.Thread | None = None
        self._stopped = threading.Event()

    # ------------------------------------------------------------------ lookups

    def get(self, key: str) -> V | None:
        """The value cached for `key`, or None: not cached, expired, or not trusted now."""
        self._ensure_listener()
        now = time.monotonic()
        if now > self._trusted_until:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if now > entry.expires_at:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return entry.value

    def fill_ticket(self) -> int | None:
        """Take before reading the source; None when a fill would not be kept anyway."""
        self._ensure_listener()
        if time.monotonic() > self._trusted_until:
            return None
        return self._generation

    def put(self, key: str, value: V, *, tag: str, ticket: int | None) -> bool:
        """Cache what the source said for `key`, unless anything was invalidated since
        `ticket` was taken (or the listener is not trusted now); True if kept."""
        if ticket is None:
            return False
        settings = self._settings()
        now = time.monotonic()
        with self._lock:
            if ticket != self._generation or now > self._trusted_until:
                return False
            if settings.max_entries <= 0:
                return False
            self._drop(key)
            self._entries[key] = _Entry(value, tag, now + settings.max_age)
            self._keys_by_tag.setdefault(tag, set()).add(key)
            while len(self._entries) > settings.max_entries:
                self._drop(next(iter(self._entries)))
        return True

    def holds(self, key: str) -> bool:
        """Whether an entry for `key` is in memory (trusted or not): for tests and checks."""
        return key in self._entries

    @property
    def trusted(self) -> bool:
        return time.monotonic() <= self._trusted_until

    @property
    def generation(self) -> int:
        return self._generation

    # ------------------------------------------------------------------ invalidation

    def invalidate_on_commit(self, tag: str) -> None:
        """Drop `tag`'s entries in this process now and, once the current transaction
        commits (at once outside one), in every process. Call it in the transaction that
        changes what the entries say."""
        self.forget(tag)
        transaction.on_commit(partial(self._publish, tag))

    def forget(self, tag: str) -> None:
        """Drop `tag`'s entries (every entry for EVERY_TAG) in this process only, and make
        every fill in flight void."""
        with self._lock:
            self._generation += 1
            if tag == EVERY_TAG:
                self._entries.clear()
                self._keys_by_tag.clear()
                return
            for key in list(self._keys_by_tag.get(tag, ())):
                self._drop(key)

    def _drop(self, key: str) -> None:
        # Called with self._lock held.
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        keys = self._keys_by_tag.get(entry.tag)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys_by_tag[entry.tag]

    def _publish(self, tag: str) -> None:
        try:
            self._redis().publish(self._settings().channel, tag)
        except Exception as exc:  # the write committed; max_age is the backstop now
            logger.error(
                "could not publish a cache invalidation; other processes may serve the "
                "old entry until it expires",
                extra={"cache": self.name, "tag": tag, "error": type(exc).__name__},
            )

    # ------------------------------------------------------------------ the listener

    def _ensure_listener(self) -> None:
        if self._listener is not None or self._closed:
            return
        with self._start_lock:
            if self._listener is None:
                self._listener = threading.Thread(
                    target=self._listen, name=f"{self.name}-invalidations", daemon=True
                )
                self._listener.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the listener (for tests: a process's caches live as long as it does)."""
        self._closed = True
        self._stopped.set()
        listener = self._listener
        if listener is not None and listener is not threading.current_thread():
            listener.join(timeout)
        self._lose()

    def _listen(self) -> None:
        failures = 0
        while not self._closed:
            connection = None
            try:
                connection, settings = self._subscribe()
                failures = 0
                self._serve(connection, settings)
            except Exception as exc:
                failures += 1
                if failures == 1:  # once per outage, not once per retry
                    logger.warning(
                        "cache invalidations unheard; every lookup reads the source until "
                        "the listener subscribes again",
                        extra={"cache": self.name, "error": type(exc).__name__},
                    )
            finally:
                self._lose()
                if connection is not None:
                    connection.disconnect()
            if failures:
                self._stopped.wait(min(_MAX_RETRY_DELAY, _FIRST_RETRY_DELAY * 2**failures))

    def _subscribe(self) -> tuple[Any, CacheSettings]:
        """A connection of its own (not the pool's: redis-py would reconnect a pooled one
        silently, and messages published meanwhile would be lost unnoticed), subscribed."""
        settings = self._settings()
        pool = self._redis().connection_pool
        connection = pool.connection_class(
            **{
                **pool.connection_kwargs,
                "client_name": f"{self.name}-listener-{os.getpid()}",
                "health_check_interval": 0,  # our pings, read by us
            }
        )
        connection.connect()
        sent = time.monotonic()
        connection.send_command("SUBSCRIBE", settings.channel, check_health=False)
        reply = connection.read_response(push_request=True)
        if not (isinstance(reply, list) and _text(reply[0]) == "subscribe"):
            raise redis.ConnectionError(f"unexpected answer to SUBSCRIBE: {reply!r}")
        with self._lock:
            # Whatever was published before the subscription is unheard: start empty.
            self._entries.clear()
            self._keys_by_tag.clear()
            self._generation += 1
            self._trusted_until = sent + settings.bound
        self.subscriptions += 1
        return connection, settings

    def _serve(self, connection: Any, settings: CacheSettings) -> None:
        """Read messages and pongs until closed or the settings change (then resubscribe);
        raise when the connection fails or stops answering."""
        interval = settings.bound / _PINGS_PER_BOUND
        pings: dict[int, float] = {}  # sequence number -> when it was sent
        answered = time.monotonic()  # when the last answered ping was sent
        sequence = 0
        next_ping = time.monotonic()
        while not self._closed:
            now = time.monotonic()
            if now >= next_ping:
                latest = self._settings()
                if (latest.channel, latest.bound) != (settings.channel, settings.bound):
                    return  # subscribe anew, on the channel and with the bound now configured
                if now - answered > _UNANSWERED_BOUNDS_BEFORE_RECONNECT * settings.bound:
                    raise redis.TimeoutError("pings unanswered")
                sequence += 1
                pings[sequence] = now
                connection.send_command("PING", str(sequence), check_health=False)
                next_ping = now + interval
            if connection.can_read(timeout=max(0.0, next_ping - time.monotonic())):
                sent = self._handle(connection.read_response(push_request=True), pings, settings)
                if sent is not None:
                    answered = sent

    def _handle(self, reply: Any, pings: dict[int, float], settings: CacheSettings) -> float | None:
        """Apply one message, or trust up to a pong's ping; returns that ping's send time.

        Replies come in the order Redis sent them. RESP2 (in subscribed mode) answers a
        PING with ["pong", data]; RESP3 with the data alone, and messages come as pushes
        (push_request=True hands them to us, not to a handler)."""
        if isinstance(reply, list) and reply:
            kind = _text(reply[0])
            if kind == "message":
                self.forget(_text(reply[2]))
                return None
            if kind != "pong":
                return None  # e.g. a maintenance notice
            reply = reply[1]
        if not isinstance(reply, bytes | str) or not _text(reply).isdigit():
            return None
        sent = pings.get(int(_text(reply)))
        if sent is None:
            return None
        for number in [number for number in pings if pings[number] <= sent]:
            del pings[number]
        # Every message published before this ping reached Redis has been applied above.
        self._trusted_until = sent + settings.bound
        return sent

    def _lose(self) -> None:
        """Not listening: nothing is served or filled until the next subscription."""
        self._trusted_until = _NEVER
        self.losses += 1
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._keys_by_tag.clear()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_instances: weakref.WeakSet[InvalidatedCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for cache in list(_instances):
        cache._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)
