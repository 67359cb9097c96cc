"""The event sink: a Redis Stream, written with producer-side deduplication.

One Lua script checks the event's dedupe key and XADDs in one atomic step, so an event
re-published after a crash (published, but not yet marked so in PostgreSQL) does not reach
the stream twice within `OUTBOX_DEDUPE_TTL`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings

# KEYS[1]: dedupe key, KEYS[2]: stream. ARGV[1]: dedupe TTL (s), ARGV[2]: approximate
# MAXLEN, ARGV[3..]: field, value, field, value... Returns {added (0/1), entry id}.
_PUBLISH_ONCE = """
local existing = redis.call('GET', KEYS[1])
if existing then
  return {0, existing}
end
local entry = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[1], entry, 'EX', ARGV[1])
return {1, entry}
"""


# Errors that say "the sink cannot take writes now", not "this event is bad": a replica
# failover's READONLY belongs here too, so it pauses the relay instead of spending attempts.
_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError)


class SinkUnavailable(Exception):
    """The sink cannot be reached: pause and retry later, spending no attempt."""


class PoisonEvent(Exception):
    """This event can never be published as it is: dead-letter it at once."""


@dataclass(frozen=True)
class PublishResult:
    entry_id: str
    duplicate: bool  # the stream already had it (a re-publish)


@cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.EVENT_STREAM_REDIS_URL,
        socket_connect_timeout=settings.EVENT_STREAM_SOCKET_TIMEOUT,
        socket_timeout=settings.EVENT_STREAM_SOCKET_TIMEOUT,
        health_check_interval=30,
        # redis-py retries a refused connection with backoff by default (~4 s); the relay
        # has its own breaker and must learn of an outage at once.
        retry=None,
    )


def sink_client() -> redis.Redis:
    return _client()


def stream_fields(event) -> list[str]:
    """The envelope as stream fields: payload as JSON text, version as a decimal string."""
    return [
        "id",
        str(event.id),
        "type",
        event.type,
        "aggregate_type",
        event.aggregate_type,
        "aggregate_id",
        str(event.aggregate_id),
        "version",
        str(event.version),
        "occurred_at",
        event.occurred_at.isoformat(),
        "correlation_id",
        event.correlation_id or "",
        "payload",
        json.dumps(event.payload, separators=(",", ":"), sort_keys=True),
    ]


def _dedupe_key(event_id) -> str:
    return f"{settings.EVENT_STREAM}:dedupe:{event_id}"


def sink_ping() -> bool:
    try:
        return bool(_client().ping())
    except redis.RedisError:
        return False


def sink_publish(events: Sequence) -> list[PublishResult | Exception]:
    """Publish events in order, in one round trip; one result (or error) per event.

    Raises SinkUnavailable when Redis cannot be reached at all; per-event errors (a poison
    event, a rejected command) come back in the list so the others still count.
    """
    client = _client()
    pipeline = client.pipeline(transaction=False)
    script = client.register_script(_PUBLISH_ONCE)
    prepared: list[Exception | None] = []
    for event in events:
        fields = stream_fields(event)
        size = sum(len(value.encode()) for value in fields)  # bytes, not characters
        if size > settings.OUTBOX_MAX_EVENT_BYTES:
            prepared.append(PoisonEvent(f"event is {size} bytes, over OUTBOX_MAX_EVENT_BYTES"))
            continue
        prepared.append(None)
        script(
            keys=[_dedupe_key(event.id), settings.EVENT_STREAM],
            args=[settings.OUTBOX_DEDUPE_TTL, settings.EVENT_STREAM_MAXLEN, *fields],
            client=pipeline,
        )
    try:
        replies = iter(pipeline.execute(raise_on_error=False))
    except _UNAVAILABLE as exc:
        raise SinkUnavailable(f"{type(exc).__name__}: {exc}") from exc
    results: list[PublishResult | Exception] = []
    for error in prepared:
        if error is not None:
            results.append(error)
            continue
        reply = next(replies)
        if isinstance(reply, _UNAVAILABLE):
            raise SinkUnavailable(str(reply))
        if isinstance(reply, Exception):
            results.append(reply)
            continue
        added, entry_id = reply
        results.append(
            PublishResult(
                entry_id=entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id),
                duplicate=not added,
            )
        )
    return results
