"""The event sink: a Redis Stream, written with producer-side deduplication.

One Lua script publishes a whole batch in one call: per event it checks the event's dedupe
key and XADDs in one atomic step, so an event re-published after a crash (published, but
not yet marked so in PostgreSQL) does not reach the stream twice within
`OUTBOX_DEDUPE_TTL`. The batch travels as one JSON argument and the answer as one string:
redis-py then packs and parses a handful of values per batch instead of ~20 per event,
which is what a pipelined per-event script call spent most of its time on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis
from django.conf import settings

# KEYS[1]: stream. ARGV[1]: dedupe key prefix (+ event id = the key), ARGV[2]: dedupe TTL
# (s), ARGV[3]: approximate MAXLEN, ARGV[4]: JSON array of events, each [event id, field,
# value, field, value...]. Returns one line per event: "+<entry id>" added, "=<entry id>"
# already there (a re-publish), "!<error>" this event's XADD failed (the others still ran).
# (The dedupe keys are derived here rather than passed in KEYS, as the one-event script
# did too: the sink is a single Redis, not a cluster.)
_PUBLISH_BATCH = r"""
local events = cjson.decode(ARGV[4])
local replies = {}
for i, event in ipairs(events) do
  local key = ARGV[1] .. event[1]
  local existing = redis.call('GET', key)
  if existing then
    replies[i] = '=' .. existing
  else
    local entry = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(event, 2))
    if type(entry) == 'table' and entry.err then
      replies[i] = '!' .. string.gsub(entry.err, '[\r\n]', ' ')
    else
      redis.call('SET', key, entry, 'EX', ARGV[2])
      replies[i] = '+' .. entry
    end
  end
end
return table.concat(replies, '\n')
"""
# A batch is sent as several script calls (in one round trip) when its JSON would exceed
# this many characters: big events do not make one huge argument.
_CALL_CHARS = 1 << 20

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
    """The envelope as stream fields: payload as JSON text, version and schema_version as
    decimal strings."""
    return [
        "id",
        str(event.id),
        "type",
        event.type,
        "schema_version",
        str(event.schema_version),
        "aggregate_type",
        event.aggregate_type,
        "aggregate_id",
        str(event.aggregate_id),
        "version",
        str(event.version),
        "occurred_at",
        getattr(event, "occurred_at_iso", None) or event.occurred_at.isoformat(),
        "correlation_id",
        event.correlation_id or "",
        "payload",
        payload_json(event),
    ]


def payload_json(event) -> str:
    """The payload as JSON text: as PostgreSQL rendered it when the relay claimed the row
    (`payload_json`, no parse and re-serialisation), else serialised here."""
    text = getattr(event, "payload_json", None)
    if text is not None:
        return text
    return json.dumps(event.payload, separators=(",", ":"), sort_keys=True)


def _dedupe_prefix() -> str:
    return f"{settings.EVENT_STREAM}:dedupe:"


def sink_ping() -> bool:
    try:
        return bool(_client().ping())
    except redis.RedisError:
        return False


def sink_publish(events: Sequence) -> list[PublishResult | Exception]:
    """Publish events in order, in one script call (round trip) for a usual batch; one
    result (or error) per event.

    Raises SinkUnavailable when Redis cannot be reached at all; per-event errors (a poison
    event, a rejected command) come back in the list so the others still count.
    """
    results: list[PublishResult | Exception | None] = []
    calls: list[tuple[list[int], list[list[str]]]] = []  # (result slots, events) per call
    chars = _CALL_CHARS  # start a new call at the first event
    for event in events:
        fields = stream_fields(event)
        size = _byte_size(fields)
        if size > settings.OUTBOX_MAX_EVENT_BYTES:
            results.append(PoisonEvent(f"event is {size} bytes, over OUTBOX_MAX_EVENT_BYTES"))
            continue
        if chars + size > _CALL_CHARS:
            calls.append(([], []))
            chars = 0
        chars += size
        calls[-1][0].append(len(results))
        calls[-1][1].append([fields[1], *fields])
        results.append(None)
    client = _client()
    script = client.register_script(_PUBLISH_BATCH)
    for slots, batch in calls:
        for slot, result in zip(slots, _publish_call(client, script, batch), strict=True):
            results[slot] = result
    return results  # type: ignore[return-value]  # every None slot was filled above


def _byte_size(fields: list[str]) -> int:
    """Bytes of the fields in UTF-8, encoding them only when the count of characters
    leaves any doubt (a character is 1 to 4 bytes)."""
    chars = sum(map(len, fields))
    if chars * 4 <= settings.OUTBOX_MAX_EVENT_BYTES:
        return chars
    return sum(len(value.encode()) for value in fields)


def _publish_call(
    client: redis.Redis, script: Any, batch: list[list[str]]
) -> list[PublishResult | Exception]:
    args = [
        _dedupe_prefix(),
        settings.OUTBOX_DEDUPE_TTL,
        settings.EVENT_STREAM_MAXLEN,
        json.dumps(batch, ensure_ascii=False, separators=(",", ":")),
    ]
    try:
        reply = script(keys=[settings.EVENT_STREAM], args=args, client=client)
    except _UNAVAILABLE as exc:
        raise SinkUnavailable(f"{type(exc).__name__}: {exc}") from exc
    except redis.ResponseError as exc:  # the whole call was refused (e.g. out of memory)
        return [exc] * len(batch)
    lines = reply.decode().split("\n")
    if len(lines) != len(batch):  # never seen; if it were, retry them (dedupe holds)
        error = redis.ResponseError(f"publish script answered {len(lines)} for {len(batch)}")
        return [error] * len(batch)
    return [_publish_outcome(line) for line in lines]


def _publish_outcome(line: str) -> PublishResult | Exception:
    mark, text = line[:1], line[1:]
    if mark == "+":
        return PublishResult(entry_id=text, duplicate=False)
    if mark == "=":
        return PublishResult(entry_id=text, duplicate=True)
    if text.startswith("READONLY"):  # a replica now: the sink cannot take writes
        raise SinkUnavailable(text)
    return redis.ResponseError(text)
