"""Helpers for the outbox tests: enqueue synthetic events, read the stream back, check the
delivery contract (exactly once, envelope fields, version order), poll with deadlines."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence

import redis
from django.conf import settings
from django.db import transaction

from outbox.models import OutboxEvent, OutboxStatus
from outbox.services import EventEnvelope, outbox_enqueue
from tests.event_contract import check_stream_entries
from tests.polling import eventually as eventually  # re-exported for the outbox tests

AGGREGATE_TYPE = "test"


def new_aggregate_ids(count: int) -> list[str]:
    return [f"agg-{uuid.uuid4().hex[:12]}" for _ in range(count)]


def enqueue(
    *,
    aggregate_ids: Sequence[str],
    versions: Iterable[int],
    payload: dict | None = None,
    aggregate_type: str = AGGREGATE_TYPE,
) -> list[OutboxEvent]:
    """One transaction: for each version (outer) and aggregate (inner), enqueue an event."""
    rows = []
    with transaction.atomic():
        for version in versions:
            for aggregate_id in aggregate_ids:
                rows.append(
                    outbox_enqueue(
                        event=EventEnvelope(
                            type="test.happened",
                            aggregate_type=aggregate_type,
                            aggregate_id=aggregate_id,
                            version=version,
                            payload=payload if payload is not None else {"n": version},
                            schema_version=1,
                        )
                    )
                )
    return rows


def use_redis(settings, url: str) -> None:
    """Point this process's sink (and broker settings) at the Redis at `url`."""
    import outbox.sink

    settings.REDIS_URL = url
    settings.EVENT_STREAM_REDIS_URL = url
    settings.CELERY_BROKER_URL = url
    outbox.sink._client.cache_clear()


def stream_client(url: str | None = None) -> redis.Redis:
    return redis.Redis.from_url(url or settings.EVENT_STREAM_REDIS_URL, decode_responses=True)


def stream_entries(client: redis.Redis | None = None, stream: str | None = None) -> list[dict]:
    """Every entry of the stream, oldest first, as {field: value} (plus "_entry_id"); each
    one checked against the event contract first."""
    client = client or stream_client()
    stream = stream or settings.EVENT_STREAM
    entries = [
        {"_entry_id": entry_id, **fields} for entry_id, fields in client.xrange(stream, "-", "+")
    ]
    check_stream_entries(entries, where=stream)
    return entries


def stream_length(client: redis.Redis | None = None, stream: str | None = None) -> int:
    client = client or stream_client()
    try:
        return client.xlen(stream or settings.EVENT_STREAM)
    except redis.ConnectionError:
        return -1


def assert_delivered_exactly_once_in_order(entries: list[dict], rows: Iterable[OutboxEvent]):
    """Each row is in the stream exactly once, and each aggregate's versions are ascending."""
    rows = list(rows)
    ids = [entry["id"] for entry in entries]
    duplicates = {i for i in ids if ids.count(i) > 1} if len(set(ids)) != len(ids) else set()
    assert not duplicates, f"{len(duplicates)} event ids reached the stream more than once"
    assert set(ids) == {str(row.id) for row in rows}, (
        f"stream has {len(set(ids))} ids, outbox has {len(rows)} rows; "
        f"missing {len({str(r.id) for r in rows} - set(ids))}, "
        f"unexpected {len(set(ids) - {str(r.id) for r in rows})}"
    )
    assert_versions_ascending(entries)


def assert_versions_ascending(entries: list[dict]) -> None:
    seen: dict[tuple[str, str], list[int]] = defaultdict(list)
    for entry in entries:
        seen[(entry["aggregate_type"], entry["aggregate_id"])].append(int(entry["version"]))
    out_of_order = {key: versions for key, versions in seen.items() if versions != sorted(versions)}
    assert not out_of_order, f"versions out of order for {len(out_of_order)} aggregates: " + str(
        dict(list(out_of_order.items())[:3])
    )


def assert_entry_matches_row(entry: dict, row: OutboxEvent) -> None:
    """Every envelope field is a stream field: payload as JSON text, version and
    schema_version as decimals."""
    assert entry["id"] == str(row.id)
    assert entry["type"] == row.type
    assert entry["aggregate_type"] == row.aggregate_type
    assert entry["aggregate_id"] == row.aggregate_id
    assert entry["version"] == str(row.version)
    assert entry["version"].isdigit()
    assert entry["occurred_at"] == row.occurred_at.isoformat()
    assert entry["correlation_id"] == row.correlation_id
    assert json.loads(entry["payload"]) == row.payload
    assert entry["schema_version"] == str(row.schema_version)
    assert set(entry) - {"_entry_id"} == {
        "id",
        "type",
        "schema_version",
        "aggregate_type",
        "aggregate_id",
        "version",
        "occurred_at",
        "correlation_id",
        "payload",
    }


def status_counts() -> dict[str, int]:
    counts = dict.fromkeys(OutboxStatus.values, 0)
    for status in OutboxEvent.objects.values_list("status", flat=True):
        counts[status] += 1
    return counts
