"""Helpers for the outbox tests: enqueue synthetic events, read the stream back, check the
delivery contract (exactly once, envelope fields, version order), poll with deadlines."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

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


class HoldingProxy:
    """A TCP proxy in front of Redis that can hold a client's request in flight.

    Once armed, the first client chunk containing `marker` (e.g. b"EVALSHA": the publish)
    and everything after it on that connection are held; `on_hold` runs at that moment
    (e.g. to SIGSTOP the client). `release()` forwards what was held; `replied` is set when
    the server's answer to it has been passed back to the client.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        import socket
        import threading

        self._socket_module = socket
        self._threading = threading
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held = threading.Event()
        self.replied = threading.Event()
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self._on_hold: Callable[[], None] | None = None
        self._holding: dict = {}  # client socket -> (server socket, [chunks])
        self._released = False
        self._sockets: list = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def arm(self, marker: bytes, on_hold: Callable[[], None] | None = None) -> None:
        with self._lock:
            self._marker, self._on_hold = marker, on_hold

    def release(self) -> None:
        with self._lock:
            self._released = True
            holding, self._holding = self._holding, {}
            for server, chunks in holding.values():
                for chunk in chunks:
                    server.sendall(chunk)

    def close(self) -> None:
        self._closed = True
        for sock in [self.listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = self._socket_module.create_connection(self.target)
            self._sockets += [client, server]
            self._threading.Thread(
                target=self._upstream, args=(client, server), daemon=True
            ).start()
            self._threading.Thread(
                target=self._downstream, args=(client, server), daemon=True
            ).start()

    def _upstream(self, client, server) -> None:
        while True:
            try:
                chunk = client.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                server.close()
                return
            with self._lock:
                if client in self._holding:
                    self._holding[client][1].append(chunk)
                    continue
                if self._marker and not self._released and self._marker in chunk:
                    self._holding[client] = (server, [chunk])
                    self._marker = None
                    if self._on_hold:
                        self._on_hold()
                    self.held.set()
                    continue
            server.sendall(chunk)

    def _downstream(self, client, server) -> None:
        while True:
            try:
                chunk = server.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                client.close()
                return
            client.sendall(chunk)
            if self._released:
                self.replied.set()
