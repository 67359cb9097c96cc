"""Benchmark of the outbox relay (SPEC §4): committed rows → Redis Stream entries.

    .venv/bin/python bench/relay_bench.py [--events 50000] [--workers 1,4]
        [--database-url postgres://...] [--redis-url redis://...] [--lag-duration 20]

1. Throughput, per worker count: inserts --events pending events (many aggregates, 1-6
   versions each) with COPY while nothing runs (nudges off), then starts one Celery beat
   and ONE `celery worker -c N` (prefork: N worker processes) and measures events/s from
   start until no row is pending, and between the first and the last stream entry.
   Verifies the stream length, that no event id is there twice, that every outbox row is
   in the stream and that each aggregate's versions are in order.
2. Raw XADD throughput on the same Redis (redis-py, pipeline of 200, same fields and
   MAXLEN ~ as the sink) and the sink's own Lua publish path without PostgreSQL, so the
   relay/raw ratio can be read against what Redis alone does.
3. End-to-end lag (commit → stream entry) while bench/orders_bench.py drives
   POST /api/v1/orders/ at each --lag-concurrency (default 8; e.g. 1,8 for a sequential
   and a loaded run), with a worker (-c 1) and beat running and nudges on: per event, the
   stream entry id's millisecond timestamp minus the row's created_at (written in the
   committing transaction, so this slightly over-states lag by the rest of that
   transaction). Falls back to its own gunicorn + load loop when the orders benchmark
   cannot be used. Meanwhile a Redis MONITOR counts the commands and round trips the web
   processes (gunicorn) send per order created: the rate limiter's and the nudges'.

Uses its own database (created + migrated; emptied only if this script created it), its
own EVENT_STREAM / CELERY_QUEUE / REDBEAT_KEY_PREFIX names (unique per run), deletes its
streams, dedupe keys, queue and redbeat keys at the end (never a FLUSH), and stops every
process it started, by PID/process group, on exit, error or Ctrl-C. Prints a table and
writes bench/results/relay-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import re
import secrets
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402 - after the path set-up
    RAISED_RATE,
    RESULTS_DIR,
    DbUrl,
    add_server_args,
    backend_pids,
    core_count,
    create_and_migrate,
    git_revision,
    machine_busy_seconds,
    make_log,
    manage,
    shown_path,
    utc_stamp,
    write_json,
)
from scripts.processes import (  # noqa: E402
    PYTHON,
    ManagedProcess,
    beat_command,
    cpu_seconds,
    group_pids,
    start_process,
    web_command,
    worker_command,
)
from scripts.servers import free_port  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/orders_relay_bench"
DB_MARKER = "relay_bench: created by bench/relay_bench.py; emptied before every run"
COPY_COLUMNS = (
    "id, type, aggregate_type, aggregate_id, version, occurred_at, correlation_id, payload, "
    "status, attempts, next_attempt_at, last_error, created_at"
)


log = make_log("relay-bench")


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


# --------------------------------------------------------------------------- processes


@dataclass
class Procs:
    """Every process this script starts, each leading its own process group; stopped by
    PID (SIGTERM to the leader, then SIGKILL to its group) — never by name."""

    log_dir: Path
    running: dict[str, ManagedProcess] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> ManagedProcess:
        path = self.log_dir / f"{name}.log"
        # die_with_parent: started before any thread of ours, so preexec_fn is safe.
        proc = start_process(name, argv, env, path, die_with_parent=True)
        self.running[name] = proc
        self.logs[name] = path
        log(f"started {name} (pid {proc.pid})")
        return proc

    def check_alive(self) -> None:
        for proc in self.running.values():
            proc.check_alive()

    def cpu_seconds(self, name: str) -> float:
        proc = self.running.get(name)
        if proc is None:
            return 0.0
        return sum(cpu_seconds(pid) for pid in group_pids(proc.pid))

    def stop(self, name: str, timeout: float = 20.0) -> None:
        proc = self.running.pop(name, None)
        # celery: warm shutdown; gunicorn: drain. Then SIGKILL to pool children that
        # outlived their master (our group only).
        if proc is not None and not proc.stop(timeout, whole_group=False):
            log(f"{name} did not stop in {timeout:.0f}s: SIGKILL to its group")

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name, timeout=10.0)


# --------------------------------------------------------------------------- database


def prepare_database(db: DbUrl, env: dict[str, str]) -> None:
    """Create (once) and migrate the bench database; refuse to empty one we did not create."""
    if not create_and_migrate(db, env, marker=DB_MARKER, log=log):
        raise SystemExit(
            f"database {db.name} was not created by bench/relay_bench.py (no marker comment): "
            "refusing to empty its outbox; pass another --database-url"
        )


def empty_outbox(db: DbUrl) -> None:
    # Orders of an earlier run would expire during this one and add order.cancelled events
    # (and expiry work) that the measurement does not expect: start from empty tables.
    with db.connect() as conn:
        conn.execute(
            "TRUNCATE outbox_outboxevent, payments_payment, payments_webhookinboxentry, "
            "orders_orderitem, orders_idempotencyrecord, orders_order CASCADE"
        )


def make_events(n: int, seed: int) -> list[SimpleNamespace]:
    """n events over many aggregates (1-6 versions each), interleaved in time the way an
    order's created/paid/cancelled events are, every aggregate's versions in order."""
    rng = random.Random(seed)
    types = ["order.created", "order.paid", "order.cancelled", "payment.refunded"]
    keyed = []
    total = 0
    while total < n:
        count = min(rng.randint(1, 6), n - total)
        aggregate_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        key = rng.random()
        for version in range(1, count + 1):
            keyed.append((key, aggregate_id, version))
            key += rng.random() * 0.05
        total += count
    keyed.sort()
    base = dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=n)
    events = []
    for index, (_, aggregate_id, version) in enumerate(keyed):
        at = base + dt.timedelta(milliseconds=index)
        payload = {
            "order_id": aggregate_id,
            "status": "pending_payment",
            "email": f"customer-{index}@example.com",
            "currency": "EUR",
            "total": "28.20",
            "items": [
                {"product_id": str(uuid.UUID(int=7)), "sku": "BENCH-A", "quantity": 2},
                {"product_id": str(uuid.UUID(int=8)), "sku": "BENCH-B", "quantity": 1},
            ],
        }
        events.append(
            SimpleNamespace(
                id=uuid.UUID(int=rng.getrandbits(128), version=4),
                type=types[min(version, len(types)) - 1],
                aggregate_type="order",
                aggregate_id=aggregate_id,
                version=version,
                schema_version=1,
                occurred_at=at,
                correlation_id=f"req-{index:08d}",
                payload=payload,
            )
        )
    return events


def insert_events(db: DbUrl, events: list[SimpleNamespace]) -> float:
    """COPY the events in as pending, due now; one transaction. Returns seconds taken."""
    started = time.perf_counter()
    with db.connect(autocommit=False) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY outbox_outboxevent ({COPY_COLUMNS}) FROM STDIN") as copy,
        ):
            for e in events:
                copy.write_row(
                    (
                        e.id,
                        e.type,
                        e.aggregate_type,
                        e.aggregate_id,
                        e.version,
                        e.occurred_at,
                        e.correlation_id,
                        json.dumps(e.payload),
                        "pending",
                        0,
                        e.occurred_at,
                        "",
                        e.occurred_at,
                    )
                )
        conn.commit()
    with db.connect() as conn:
        # Fresh statistics, as autovacuum would soon have: plans must not depend on timing.
        conn.execute("ANALYZE outbox_outboxevent")
    return time.perf_counter() - started


def explain_claim(db: DbUrl, batch_size: int) -> dict:
    """EXPLAIN ANALYZE of the relay's claim statement on the current table, rolled back."""
    import psycopg

    from outbox.locks import OUTBOX_WORK

    claim_sql, params = OUTBOX_WORK.claim_statement(limit=batch_size, token=uuid.uuid4())
    with db.connect(autocommit=False) as conn:
        cur = psycopg.ClientCursor(conn)
        timings = []
        plan = ""
        for _ in range(3):
            started = time.perf_counter()
            cur.execute(claim_sql, params)
            claimed = len(cur.fetchall())
            timings.append((time.perf_counter() - started) * 1000)
            conn.rollback()
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + claim_sql, params)
        plan = "\n".join(row[0] for row in cur.fetchall())
        conn.rollback()
    return {"claimed": claimed, "ms": [round(t, 1) for t in timings], "plan": plan}


def postgres_cpu(db_conn, dbname: str) -> dict[int, float]:
    """CPU seconds of each backend connected to the bench database (same machine)."""
    return {pid: cpu_seconds(pid) for pid in backend_pids(db_conn, dbname)}


def pending_count(db_conn) -> int:
    return db_conn.execute(
        "SELECT count(*) FROM outbox_outboxevent WHERE status = 'pending'"
    ).fetchone()[0]


# --------------------------------------------------------------------------- redis


def redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=30)


def entry_ms(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


def read_stream(client, stream: str) -> list[tuple[int, dict[bytes, bytes]]]:
    """Every entry of a stream as (ms timestamp, fields), in stream order."""
    out = []
    start = "-"
    while True:
        chunk = client.xrange(stream, min=start, max="+", count=10000)
        if not chunk:
            return out
        for entry_id, fields in chunk:
            out.append((entry_ms(entry_id), fields))
        last = chunk[-1][0].decode()
        start = "(" + last


def delete_stream_keys(client, stream: str) -> int:
    deleted = client.delete(stream)
    batch = []
    for key in client.scan_iter(match=f"{stream}:dedupe:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            deleted += client.unlink(*batch)
            batch = []
    if batch:
        deleted += client.unlink(*batch)
    return deleted


def delete_matching(client, pattern: str) -> int:
    keys = list(client.scan_iter(match=pattern, count=5000))
    return client.unlink(*keys) if keys else 0


# --------------------------------------------------------------------------- redis census

# One MONITOR line: +<unix time> [<db> <client address>] "<command>" "<arg>" ...
MONITOR_LINE = re.compile(rb'^\+(\d+\.\d+) \[\d+ ([^\]]+)\] "([^"]+)"')
# What a nudge's SET or a task message's LPUSH is about: the task's name.
TASK_NAME = re.compile(rb"(?::nudge:|task.{1,8}?)([a-z_]+\.tasks\.[a-z_]+)")
# Commands a client sends within this long of each other on one connection left it in one
# write (a pipeline): one round trip. Separate round trips on one connection are at least a
# network round trip plus the client's own work apart (>= ~0.1 ms here).
PIPELINE_GAP_S = 0.0001


class RedisCensus:
    """Which Redis commands some processes send (here: the web processes, per order).

    MONITOR on its own connection sees every client of that Redis; a command is counted when
    it came from a TCP connection owned by one of the noted processes (their sockets to the
    Redis port, read from /proc). Noted repeatedly while the load runs, because clients
    connect lazily. The shared Redis's other clients (other people's tests) are not counted.
    """

    def __init__(self, redis_url: str) -> None:
        url = urllib.parse.urlparse(redis_url)
        self.port = url.port or 6379
        self.sock = socket.create_connection((url.hostname or "127.0.0.1", self.port))
        if url.password:
            user = urllib.parse.unquote(url.username or "default")
            password = urllib.parse.unquote(url.password)
            self.sock.sendall(_resp("AUTH", user, password))
        self.sock.sendall(_resp("MONITOR"))
        self.lines: list[bytes] = []
        self.ports: set[int] = set()
        self._stopped = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        while not self._stopped:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            *lines, buffer = (buffer + chunk).split(b"\r\n")
            self.lines.extend(lines)

    def note(self, pids: list[int]) -> None:
        """Remember the local ports of these processes' connections to the Redis port."""
        inodes = set()
        for pid in pids:
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        target = os.readlink(f"/proc/{pid}/fd/{fd}")
                        if target.startswith("socket:["):
                            inodes.add(target[8:-1])
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for row in Path(table).read_text().splitlines()[1:]:
                    cells = row.split()
                    remote_port = int(cells[2].rsplit(":", 1)[1], 16)
                    if cells[9] in inodes and remote_port == self.port:
                        self.ports.add(int(cells[1].rsplit(":", 1)[1], 16))

    def stop(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self.sock.close()
        self._thread.join(timeout=5)

    def summary(self, orders: int) -> dict:
        """Commands and round trips of the noted processes per order: on the request path,
        and on subscriber connections (a pub/sub listener's own pings, not per request)."""
        commands: Counter[str] = Counter()
        listener: Counter[str] = Counter()
        by_task: Counter[str] = Counter()
        round_trips = 0
        last_at: dict[int, float] = {}
        parsed = []
        for line in self.lines:
            match = MONITOR_LINE.match(line)
            if not match:
                continue
            # ("[0 lua]": a command a script ran, part of that script's call)
            with contextlib.suppress(ValueError, IndexError):
                port = int(match[2].rsplit(b":", 1)[1])
                if port in self.ports:
                    parsed.append((port, float(match[1]), match[3].decode().upper(), line))
        subscribers = {port for port, _, name, _ in parsed if name.endswith("SUBSCRIBE")}
        for port, at, name, line in parsed:
            if port in subscribers:
                listener[name] += 1
                continue
            commands[name] += 1
            if name in ("SET", "LPUSH") and (task := TASK_NAME.search(line)):
                by_task[f"{name} {task[1].decode().rsplit('.', 1)[1]}"] += 1
            if at - last_at.get(port, float("-inf")) > PIPELINE_GAP_S:
                round_trips += 1
            last_at[port] = at

        def per_order(counts: Counter[str]) -> dict[str, float]:
            if not orders:
                return {}
            return {name: round(n / orders, 3) for name, n in counts.most_common()}

        total = sum(commands.values())
        return {
            "orders": orders,
            "connections": len(self.ports),
            "commands": dict(commands.most_common()),
            "commands_total": total,
            "round_trips_total": round_trips,
            "commands_per_order": round(total / orders, 3) if orders else None,
            "round_trips_per_order": round(round_trips / orders, 3) if orders else None,
            "per_order_by_command": per_order(commands),
            "nudges_per_order_by_task": per_order(by_task),
            "subscriber_commands_per_order": per_order(listener),
        }


def _resp(*parts: str) -> bytes:
    encoded = [part.encode() for part in parts]
    return b"".join(
        [f"*{len(encoded)}\r\n".encode()]
        + [b"$%d\r\n%s\r\n" % (len(part), part) for part in encoded]
    )


def descendants(root: int) -> list[int]:
    """Every live process below `root` in the process tree (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def web_pids(root: int) -> list[int]:
    """The gunicorn processes (master and workers) below `root`."""
    found = []
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            if b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def orders_created(db: DbUrl) -> int:
    with db.connect() as conn:
        return conn.execute("SELECT count(*) FROM orders_order").fetchone()[0]


# --------------------------------------------------------------------------- run context


@dataclass
class Run:
    args: argparse.Namespace
    tag: str
    stamp: str
    db: DbUrl
    procs: Procs
    base_env: dict[str, str]
    streams: list[str] = field(default_factory=list)

    @property
    def queue(self) -> str:
        return f"relay-bench-{self.tag}"

    @property
    def redbeat_prefix(self) -> str:
        return f"relay-bench:{self.tag}:redbeat"

    def stream(self, label: str) -> str:
        name = f"relay-bench:{self.tag}:{label}"
        self.streams.append(name)
        return name

    def celery_env(self, stream: str, *, nudges: bool) -> dict[str, str]:
        return self.base_env | {
            "EVENT_STREAM": stream,
            "OUTBOX_NUDGE_ON_COMMIT": "1" if nudges else "0",
        }

    @property
    def lag_env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.args.lag_env)

    def start_celery(
        self, label: str, stream: str, workers: int, *, nudges: bool, extra_env=None
    ) -> None:
        env = self.celery_env(stream, nudges=nudges) | (extra_env or {})
        loglevel = self.args.celery_loglevel
        beat = beat_command(loglevel=loglevel, schedule=self.procs.log_dir / "beat")
        self.procs.start(f"{label}-beat", beat, env)
        worker = worker_command(
            hostname=f"relay-bench-{self.tag}-{label}@%h",
            pool="prefork",
            concurrency=workers,
            queue=self.queue,
            loglevel=loglevel,
            # No broadcast chatter with other people's workers on the shared Redis.
            heartbeat=False,
        )
        self.procs.start(f"{label}-worker", worker, env)

    def stop_celery(self, label: str) -> None:
        # Workers first (warm shutdown finishes the running relay batch), then beat.
        self.procs.stop(f"{label}-worker", timeout=30)
        self.procs.stop(f"{label}-beat", timeout=10)


# --------------------------------------------------------------------------- phase 1


def verify_stream(
    client, db: DbUrl, stream: str, expected: int
) -> tuple[dict, list[tuple[int, dict]]]:
    entries = read_stream(client, stream)
    ids = [fields[b"id"].decode() for _, fields in entries]
    counts = Counter(ids)
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    last_version: dict[tuple[bytes, bytes], int] = {}
    out_of_order = 0
    for _, fields in entries:
        key = (fields[b"aggregate_type"], fields[b"aggregate_id"])
        version = int(fields[b"version"])
        if version <= last_version.get(key, 0):
            out_of_order += 1
        last_version[key] = version
    with db.connect() as conn:
        rows = conn.execute("SELECT id::text, status FROM outbox_outboxevent").fetchall()
    statuses = Counter(status for _, status in rows)
    missing = len({row[0] for row in rows} - set(counts))
    check = {
        "xlen": client.xlen(stream),
        "entries_read": len(entries),
        "expected": expected,
        "duplicate_ids": duplicates,
        "outbox_rows_missing_from_stream": missing,
        "versions_out_of_order": out_of_order,
        "outbox_statuses": dict(statuses),
    }
    check["ok"] = (
        check["xlen"] == expected
        and duplicates == 0
        and missing == 0
        and out_of_order == 0
        and statuses.get("published", 0) == expected
    )
    return check, entries


def throughput_phase(run: Run, workers: int, events: list[SimpleNamespace]) -> dict:
    args = run.args
    label = f"w{workers}"
    stream = run.stream(label)
    client = redis_client(args.redis_url)
    empty_outbox(run.db)
    delete_stream_keys(client, stream)
    log(f"[{label}] inserting {len(events)} pending events (COPY, one transaction)")
    insert_seconds = insert_events(run.db, events)
    explain = explain_claim(run.db, args.batch_size)
    log(
        f"[{label}] claim statement on {len(events)} pending rows: {explain['ms']} ms "
        f"({explain['claimed']} claimed, rolled back)"
    )
    n = len(events)
    machine_before = machine_busy_seconds()
    load_before = os.getloadavg()[0]
    started_wall = time.time()
    started = time.monotonic()
    run.start_celery(label, stream, workers, nudges=False)
    done_at = None
    progress_at, progress_len = started, 0
    samples = []  # (seconds since start, stream length) for the record
    worker_cpu = 0.0
    cpu_at_first = None
    pg_at_first: dict[int, float] = {}
    pg_now: dict[int, float] = {}
    with run.db.connect() as conn:
        next_db_check = started + 1.0
        next_pg_sample = started
        while True:
            time.sleep(0.1)
            now = time.monotonic()
            run.procs.check_alive()
            length = client.xlen(stream)
            if length and cpu_at_first is None:
                # Start-up (imports, connections) is not per-event cost.
                cpu_at_first = run.procs.cpu_seconds(f"{label}-worker")
                pg_at_first = postgres_cpu(conn, run.db.name)
            if length != progress_len:
                progress_at, progress_len = now, length
                if not samples or now - started - samples[-1][0] >= 1.0:
                    samples.append((round(now - started, 2), length))
            if now >= next_pg_sample:
                # Backends come and go (Django closes them after tasks): keep the last value.
                next_pg_sample = now + 0.3
                pg_now |= postgres_cpu(conn, run.db.name)
            if length >= n or now >= next_db_check:
                next_db_check = now + 1.0
                worker_cpu = run.procs.cpu_seconds(f"{label}-worker")
                if pending_count(conn) == 0:
                    done_at = now
                    break
            if now - progress_at > args.stall_timeout:
                raise RuntimeError(
                    f"[{label}] no stream progress for {args.stall_timeout:.0f}s at "
                    f"{length}/{n}; see {run.procs.logs[f'{label}-worker']}"
                )
    machine_cpu = machine_busy_seconds() - machine_before
    beat_cpu = run.procs.cpu_seconds(f"{label}-beat")
    run.stop_celery(label)
    check, entries = verify_stream(client, run.db, stream, n)
    with run.db.connect() as conn:
        attempts = conn.execute("SELECT sum(attempts) FROM outbox_outboxevent").fetchone()[0]
    first_ms, last_ms = entries[0][0], entries[-1][0]
    first_after = first_ms / 1000 - started_wall
    span = (last_ms - first_ms) / 1000
    wall = done_at - started
    result = {
        "workers": workers,
        "worker_model": f"one `celery worker -P prefork -c {workers}` + one beat",
        "events": n,
        "aggregates": len({e.aggregate_id for e in events}),
        "insert_s": round(insert_seconds, 2),
        "claim_explain_ms": explain["ms"],
        "wall_s": round(wall, 2),
        "events_per_s_wall": round(n / wall, 1),
        "first_entry_after_s": round(first_after, 2),
        "stream_span_s": round(span, 2),
        "events_per_s_stream": round((n - 1) / span, 1) if span > 0 else None,
        "attempts_total": attempts,
        "worker_cpu_s": round(worker_cpu, 1),
        "beat_cpu_s": round(beat_cpu, 1),
        "worker_cpu_s_at_first_entry": round(cpu_at_first or 0.0, 1),
        # Worker CPU from the first stream entry to drained, per event (start-up excluded).
        "worker_cpu_ms_per_event": round(1000 * (worker_cpu - (cpu_at_first or 0.0)) / n, 3),
        # PostgreSQL backends serving the bench database (the workers' connections).
        # Sampled every 0.3 s, so a backend living shorter than that is missed: a floor.
        "postgres_cpu_ms_per_event": round(
            1000 * sum(max(0.0, c - pg_at_first.get(p, 0.0)) for p, c in pg_now.items()) / n, 3
        ),
        "machine_cpu_pct": round(100 * machine_cpu / wall),
        "load1_before": round(load_before, 2),
        "progress": samples,
        "verify": check,
        "explain_plan": explain["plan"],
    }
    log(
        f"[{label}] {n} events in {wall:.1f}s from start ({result['events_per_s_wall']}/s); "
        f"first→last entry {span:.1f}s ({result['events_per_s_stream']}/s); "
        f"verify {'OK' if check['ok'] else 'FAILED'}"
    )
    delete_stream_keys(client, stream)
    client.close()
    return result


# --------------------------------------------------------------------------- phase 2


def raw_xadd_phase(run: Run, events: list[SimpleNamespace]) -> dict:
    """Pipelined XADD (no Lua, no dedupe, no PostgreSQL), then the sink's Lua path alone."""
    from django.conf import settings

    from outbox import sink

    client = redis_client(run.args.redis_url)
    fields = [sink.stream_fields(e) for e in events]
    maxlen = settings.EVENT_STREAM_MAXLEN
    pipe_size = run.args.pipeline
    raw = run.stream("raw")
    started = time.perf_counter()
    for i in range(0, len(fields), pipe_size):
        pipe = client.pipeline(transaction=False)
        for flat in fields[i : i + pipe_size]:
            pipe.xadd(raw, dict(zip(flat[::2], flat[1::2], strict=True)), maxlen=maxlen)
        pipe.execute()
    raw_s = time.perf_counter() - started
    raw_len = client.xlen(raw)
    delete_stream_keys(client, raw)

    # The relay's own publish function, on the same events, without the database around it.
    lua_stream = run.stream("sink")
    settings.EVENT_STREAM = lua_stream
    sink._client.cache_clear()
    started = time.perf_counter()
    for i in range(0, len(events), pipe_size):
        sink.sink_publish(events[i : i + pipe_size])
    lua_s = time.perf_counter() - started
    lua_len = client.xlen(lua_stream)
    delete_stream_keys(client, lua_stream)
    client.close()
    result = {
        "events": len(events),
        "pipeline": pipe_size,
        "raw_xadd_s": round(raw_s, 2),
        "raw_xadd_per_s": round(len(events) / raw_s, 1),
        "raw_stream_len": raw_len,
        "sink_lua_s": round(lua_s, 2),
        "sink_lua_per_s": round(len(events) / lua_s, 1),
        "sink_stream_len": lua_len,
    }
    log(
        f"[raw] XADD {result['raw_xadd_per_s']}/s; sink_publish (Lua dedupe+XADD, no DB) "
        f"{result['sink_lua_per_s']}/s"
    )
    return result


# --------------------------------------------------------------------------- phase 3


def lag_phase(run: Run, concurrency: int) -> dict:
    args = run.args
    label = f"lag-c{concurrency}"
    stream = run.stream(label)
    client = redis_client(args.redis_url)
    empty_outbox(run.db)
    delete_stream_keys(client, stream)
    if run.lag_env:
        log(f"[lag] extra environment: {run.lag_env}")
    run.start_celery(label, stream, args.lag_workers, nudges=True, extra_env=run.lag_env)
    warm_up_relay(run, client, stream)
    env = (
        run.celery_env(stream, nudges=True)
        | run.lag_env
        | {
            "RELAY_BENCH_CELERY_QUEUE": run.queue,
            "BENCH_DATABASE_URL": run.db.url,
        }
    )
    load: dict
    census = RedisCensus(args.redis_url)
    try:
        try:
            load = drive_with_orders_bench(run, env, stream, concurrency, census)
        except OrdersBenchUnusable as exc:
            log(f"[lag] orders benchmark not usable ({exc}); driving orders myself")
            load = drive_own_load(run, env, concurrency, census)
    finally:
        census.stop()
    redis_per_order = census.summary(orders_created(run.db))
    # Let the relay drain what the load committed, then stop it.
    deadline = time.monotonic() + 60
    with run.db.connect() as conn:
        while pending_count(conn) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = pending_count(conn)
    worker_cpu = run.procs.cpu_seconds(f"{label}-worker")
    run.stop_celery(label)
    entries = read_stream(client, stream)
    by_id = {fields[b"id"].decode(): ms for ms, fields in entries}
    with run.db.connect() as conn:
        rows = conn.execute(
            "SELECT id::text, created_at, occurred_at FROM outbox_outboxevent"
        ).fetchall()
    rows = [row for row in rows if row[0] != WARMUP_EVENT_ID]
    lags_created, lags_occurred, timeline = [], [], []
    for event_id, created_at, occurred_at in rows:
        ms = by_id.get(event_id)
        if ms is None:
            continue
        lags_created.append(ms - created_at.timestamp() * 1000)
        lags_occurred.append(ms - occurred_at.timestamp() * 1000)
        timeline.append((created_at.timestamp(), lags_created[-1]))
    # Lag per second of the load, to tell a start-up or end effect from steady state.
    timeline.sort()
    by_second: dict[int, list[float]] = {}
    for at, lag in timeline:
        by_second.setdefault(int(at - timeline[0][0]), []).append(lag)
    lag_by_second = [
        {
            "second": sec,
            "n": len(v),
            "p50": round(percentile(sorted(v), 0.5), 1),
            "max": round(max(v), 1),
        }
        for sec, v in sorted(by_second.items())
    ]
    lags_created.sort()
    lags_occurred.sort()
    ids = [fields[b"id"] for _, fields in entries]
    result = {
        "driver": load.get("driver"),
        "worker_model": f"one `celery worker -P prefork -c {args.lag_workers}` + one beat, "
        "nudges on",
        "load": load,
        "web_redis": redis_per_order,
        "events": len(rows),
        "events_in_stream": len(entries),
        "duplicate_ids": len(ids) - len(set(ids)),
        "pending_after_drain": left,
        "worker_cpu_s": round(worker_cpu, 1),
        "extra_env": run.lag_env,
        "lag_ms": _summary(lags_created),
        "lag_from_occurred_at_ms": _summary(lags_occurred),
        "lag_by_second": lag_by_second,
    }
    log(
        f"[{label}] {len(rows)} events; commit→stream p50 {result['lag_ms']['p50']} ms, "
        f"p99 {result['lag_ms']['p99']} ms; web Redis per order: "
        f"{redis_per_order['round_trips_per_order']} round trips, "
        f"{redis_per_order['per_order_by_command']}, nudges "
        f"{redis_per_order['nudges_per_order_by_task']}"
    )
    delete_stream_keys(client, stream)
    client.close()
    return result


WARMUP_EVENT_ID = "00000000-0000-4000-8000-00000000beef"


def warm_up_relay(run: Run, client, stream: str, timeout: float = 60.0) -> float:
    """One event through beat → worker → stream before the load starts, so worker and beat
    start-up is not counted as lag. Returns the seconds it took."""
    now = dt.datetime.now(dt.UTC)
    with run.db.connect() as conn:
        conn.execute(
            "INSERT INTO outbox_outboxevent (id, type, aggregate_type, aggregate_id, version, "
            "occurred_at, correlation_id, payload, status, attempts, next_attempt_at, "
            "last_error, created_at) VALUES (%s, 'relay_bench.warmup', 'relay_bench', "
            "'warmup', 1, %s, '', '{}', 'pending', 0, %s, '', %s)",
            [WARMUP_EVENT_ID, now, now, now],
        )
    started = time.monotonic()
    while not client.xlen(stream):
        run.procs.check_alive()
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the relay published nothing within {timeout:.0f}s")
        time.sleep(0.1)
    took = time.monotonic() - started
    log(f"[lag] relay is up: warm-up event reached the stream after {took:.1f}s")
    return took


def _summary(values: list[float]) -> dict:
    def r(v):
        return None if v is None else round(v, 1)

    return {
        "n": len(values),
        "p50": r(percentile(values, 0.50)),
        "p90": r(percentile(values, 0.90)),
        "p99": r(percentile(values, 0.99)),
        "max": r(values[-1] if values else None),
        "min": r(values[0] if values else None),
    }


class OrdersBenchUnusable(Exception):
    pass


def drive_with_orders_bench(
    run: Run, env: dict[str, str], stream: str, concurrency: int, census: RedisCensus
) -> dict:
    """bench/orders_bench.py (service phase only, --skip-pgbench: pgbench's rows carry no
    nudge), through bench/relay_orders_load.py so its gunicorn nudges our queue."""
    if not (BENCH_DIR / "orders_bench.py").is_file():
        raise OrdersBenchUnusable("bench/orders_bench.py is missing")
    args = run.args
    cmd = [
        str(PYTHON),
        str(BENCH_DIR / "relay_orders_load.py"),
        "--database-url",
        run.db.url,
        "--redis-url",
        args.redis_url,
        "--concurrency",
        str(concurrency),
        "--variants",
        "normal",
        "--duration",
        str(args.lag_duration),
        "--warmup",
        "2",
        "--skip-pgbench",
    ]
    log(f"[lag] running bench/orders_bench.py at concurrency {concurrency}")
    out_path = run.procs.log_dir / f"orders_bench-c{concurrency}.out"
    proc = run.procs.start("orders-bench", cmd, env)
    deadline = time.monotonic() + args.lag_duration + 300
    timeline = []  # what the relay sees while the load runs: queue backlog, stream, pending
    client = redis_client(args.redis_url)
    with run.db.connect() as conn:
        started = time.monotonic()
        while proc.alive:
            if time.monotonic() > deadline:
                run.procs.stop("orders-bench")
                raise RuntimeError("orders benchmark did not finish in time")
            timeline.append(
                {
                    "t": round(time.monotonic() - started, 1),
                    "queue_len": client.llen(run.queue),
                    "stream_len": client.xlen(stream),
                    "pending": pending_count(conn),
                }
            )
            census.note(web_pids(proc.pid))
            time.sleep(0.5)
    client.close()
    run.procs.running.pop("orders-bench", None)
    text = proc.log_text()
    out_path.write_text(text)
    if proc.returncode == 3:  # relay_orders_load.py: the module lacks what we need
        raise OrdersBenchUnusable(text.strip().splitlines()[-1] if text.strip() else "exit 3")
    if proc.returncode != 0:
        raise RuntimeError(f"orders benchmark failed ({proc.returncode}):\n{text[-3000:]}")
    load: dict = {
        "driver": "bench/orders_bench.py",
        "concurrency": concurrency,
        "timeline": timeline,
    }
    for line in text.splitlines():
        if line.startswith("results: "):
            path = ROOT / line.split()[1]
            with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                service = json.loads(path.read_text())["rows"][0]["service"]
                load |= {
                    "orders_json": shown_path(path),
                    "orders_per_s": round(service["orders_per_s"], 1),
                    "p50_ms": service["p50_ms"],
                    "p99_ms": service["p99_ms"],
                    "errors": service["errors"],
                }
    return load


def drive_own_load(run: Run, env: dict[str, str], concurrency: int, census: RedisCensus) -> dict:
    """gunicorn as `make run` starts it, and a threaded POST /api/v1/orders/ loop."""
    args = run.args
    port = free_port()
    env = env | {
        "ORDER_RATE_LIMIT": RAISED_RATE,
        "API_RATE_LIMIT": RAISED_RATE,
        "RATE_LIMIT_KEY_PREFIX": f"relay-bench:{run.tag}:rl",
        "CACHE_KEY_PREFIX": f"relay-bench:{run.tag}",
        "BIND": f"127.0.0.1:{port}",
        "PORT": str(port),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with run.db.connect() as conn:
        product_ids = [
            conn.execute(
                """
                INSERT INTO catalog_product
                    (id, sku, name, description, price, stock, is_active, created_at, updated_at)
                VALUES (gen_random_uuid(), %s, %s, '', %s, 2000000000, true, now(), now())
                ON CONFLICT (sku) DO UPDATE SET stock = EXCLUDED.stock, is_active = true
                RETURNING id::text
                """,
                [sku, f"Relay bench {sku}", price],
            ).fetchone()[0]
            for sku, price in (("RELAY-A", "12.50"), ("RELAY-B", "3.10"))
        ]
    api_key = manage(["create_api_client", f"relay-bench-{run.stamp}-{run.tag}"], env).strip()
    run.procs.start("gunicorn", web_command("--no-control-socket"), env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        run.procs.check_alive()
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/readyz", timeout=2) as response,  # noqa: S310
        ):
            if response.status == 200:
                break
        if time.monotonic() > deadline:
            raise RuntimeError("gunicorn not ready after 60s")
        time.sleep(0.25)
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    end = time.monotonic() + args.lag_duration

    def client_loop(worker: int) -> None:
        rng = random.Random(worker)
        n = 0
        while time.monotonic() < end:
            n += 1
            body = json.dumps(
                {
                    "email": f"relay-{run.tag}-{worker}-{n}@example.com",
                    "items": [
                        {"product_id": p, "quantity": rng.randint(1, 3)} for p in product_ids
                    ],
                }
            ).encode()
            request = urllib.request.Request(  # noqa: S310
                f"{url}/api/v1/orders/",
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "X-API-Key": api_key,
                    "Idempotency-Key": uuid.uuid4().hex,
                },
            )
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                    status = str(response.status)
            except urllib.error.HTTPError as exc:
                status = str(exc.code)
            except OSError as exc:
                status = type(exc).__name__
            with lock:
                statuses[status] += 1
                latencies.append(time.perf_counter() - started)

    threads = [
        threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    gunicorn = run.procs.running["gunicorn"]
    while any(thread.is_alive() for thread in threads):
        census.note([gunicorn.pid, *descendants(gunicorn.pid)])
        time.sleep(0.5)
    for thread in threads:
        thread.join()
    run.procs.stop("gunicorn", timeout=15)
    latencies.sort()
    return {
        "driver": "relay_bench own loop (gunicorn + urllib threads)",
        "concurrency": concurrency,
        "orders_per_s": round(statuses.get("201", 0) / args.lag_duration, 1),
        "p50_ms": round(1000 * (percentile(latencies, 0.5) or 0), 1),
        "p99_ms": round(1000 * (percentile(latencies, 0.99) or 0), 1),
        "statuses": dict(statuses),
    }


# --------------------------------------------------------------------------- report


def format_table(result: dict) -> str:
    raw = result.get("raw")
    header = f"{'measurement':<44} {'events':>7} {'events/s':>9} {'secs':>6} {'vs raw':>7}  notes"
    lines = [header, "-" * (len(header) + 40)]

    def row(name: str, events: int, rate: float | None, secs: float, note: str) -> None:
        ratio = f"{rate / raw['raw_xadd_per_s']:.3f}" if raw and rate else "-"
        shown = f"{rate:.1f}" if rate else "-"
        lines.append(f"{name:<44} {events:>7} {shown:>9} {secs:>6.1f} {ratio:>7}  {note}")

    for r in result["throughput"]:
        w = r["workers"]
        row(
            f"relay, {w} worker proc{'s' if w > 1 else ''}: start → drained",
            r["events"],
            r["events_per_s_wall"],
            r["wall_s"],
            f"includes start-up: first entry after {r['first_entry_after_s']:.1f}s; "
            f"verify {'OK' if r['verify']['ok'] else 'FAILED'}",
        )
        row(
            f"relay, {w} worker proc{'s' if w > 1 else ''}: first → last entry",
            r["events"],
            r["events_per_s_stream"],
            r["stream_span_s"],
            f"CPU ms/event: worker {r['worker_cpu_ms_per_event']:.2f}, PostgreSQL "
            f"{r['postgres_cpu_ms_per_event']:.2f}; machine "
            f"{r['machine_cpu_pct']}% of {100 * result['header']['cores']}%",
        )
    if raw:
        row(
            f"raw XADD, redis-py pipeline of {raw['pipeline']}",
            raw["events"],
            raw["raw_xadd_per_s"],
            raw["raw_xadd_s"],
            "same fields, MAXLEN ~",
        )
        row(
            "sink_publish() alone (Lua, no PostgreSQL)",
            raw["events"],
            raw["sink_lua_per_s"],
            raw["sink_lua_s"],
            "GET dedupe + XADD + SET per event, pipelined per batch",
        )
    for lag in result.get("lag") or []:
        lm, lo, load = lag["lag_ms"], lag["lag_from_occurred_at_ms"], lag["load"]
        web = lag["web_redis"]
        lines += [
            "",
            f"end-to-end lag, commit → stream entry, while {load.get('driver')} runs"
            f" (c={load.get('concurrency')}, {load.get('orders_per_s')} orders/s,"
            f" {lag['worker_model']}):",
            f"  from created_at:  {lm['n']} events  p50 {lm['p50']} ms  p90 {lm['p90']} ms"
            f"  p99 {lm['p99']} ms  max {lm['max']} ms",
            f"  from occurred_at: p50 {lo['p50']} ms  p99 {lo['p99']} ms;"
            f" duplicate ids {lag['duplicate_ids']}; pending after drain"
            f" {lag['pending_after_drain']}",
            f"  web → Redis per order ({web['orders']} orders, {web['connections']} web"
            f" connections): {web['round_trips_per_order']} round trips,"
            f" {web['commands_per_order']} commands: {web['per_order_by_command']};"
            f" nudges by task: {web.get('nudges_per_order_by_task')}; on subscriber"
            f" connections (not per request): {web.get('subscriber_commands_per_order')}",
        ]
        timeline = load.get("timeline") or []
        if timeline:
            peak = max(timeline, key=lambda x: x["queue_len"])
            most = max(timeline, key=lambda x: x["pending"])
            lines.append(
                f"  Celery queue backlog peaked at {peak['queue_len']} messages (t={peak['t']}s);"
                f" pending outbox rows peaked at {most['pending']} (t={most['t']}s)"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--workers", default="1,4", help="comma-separated worker process counts")
    add_server_args(
        parser, database_env="RELAY_BENCH_DATABASE_URL", database_default=DEFAULT_DATABASE_URL
    )
    parser.add_argument(
        "--batch-size", type=int, default=200, help="OUTBOX_BATCH_SIZE for the workers"
    )
    parser.add_argument("--pipeline", type=int, default=200, help="raw XADD pipeline depth")
    parser.add_argument("--lag-duration", type=float, default=20.0, help="seconds of order load")
    parser.add_argument(
        "--lag-concurrency",
        default="8",
        help="comma-separated order concurrencies; one lag phase each (e.g. 1,8)",
    )
    parser.add_argument("--lag-workers", type=int, default=1, help="worker processes (lag)")
    parser.add_argument("--skip-lag", action="store_true")
    parser.add_argument(
        "--lag-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the lag phase's service, worker and beat (repeatable), "
        "e.g. OUTBOX_NUDGE_MIN_INTERVAL=0.5",
    )
    parser.add_argument("--celery-loglevel", default="WARNING", help="worker/beat -l")
    parser.add_argument(
        "--stall-timeout", type=float, default=90.0, help="give up after this long w/o progress"
    )
    args = parser.parse_args(argv)
    args.worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    args.lag_levels = [int(c) for c in args.lag_concurrency.split(",") if c.strip()]
    return args


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


def cleanup_redis(run: Run) -> None:
    try:
        client = redis_client(run.args.redis_url)
        for stream in run.streams:
            delete_stream_keys(client, stream)
        delete_matching(client, f"*{run.queue}*")
        delete_matching(client, f"{run.redbeat_prefix}*")
        client.close()
    except Exception as exc:  # best effort: report, do not mask the run's outcome
        log(f"could not delete this run's Redis keys: {exc}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cores = core_count()
    stamp = utc_stamp()
    tag = secrets.token_hex(4)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    log_dir = RESULTS_DIR / f"relay-{stamp}-logs"
    log_dir.mkdir()
    db = DbUrl.parse(args.database_url, default_name="orders_relay_bench")
    base_env = {
        k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "BIND")
    } | {
        "DJANGO_SETTINGS_MODULE": "orders_project.settings",
        "DATABASE_URL": db.url,
        "REDIS_URL": args.redis_url,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "CELERY_QUEUE": f"relay-bench-{tag}",
        "REDBEAT_KEY_PREFIX": f"relay-bench:{tag}:redbeat",
        "OUTBOX_BATCH_SIZE": str(args.batch_size),
        # The worker also runs the payment saga for the lag phase's orders: point it at a
        # closed port (nobody's provider gets our payments) and park failures for an hour.
        "PAYMENT_PROVIDER_URL": f"http://127.0.0.1:{free_port()}",
        "PAYMENT_RETRY_BACKOFF": "3600",
        "PYTHONUNBUFFERED": "1",
    }
    procs = Procs(log_dir=log_dir)
    run = Run(args=args, tag=tag, stamp=stamp, db=db, procs=procs, base_env=base_env)
    header = {
        "timestamp": stamp,
        "cores": cores,
        "events": args.events,
        "worker_counts": args.worker_counts,
        "batch_size": args.batch_size,
        "database": f"{db.host}:{db.port}/{db.name}",
        "redis": args.redis_url,
        "queue": run.queue,
        "python": platform.python_version(),
        "git": git_revision(),
        "load_average_at_start": os.getloadavg(),
    }
    print(
        f"relay benchmark {stamp}: {cores} CPU cores (PostgreSQL, Redis, workers, beat and the "
        f"load share them), {args.events} events, workers {args.worker_counts}, batch "
        f"{args.batch_size}, load average {header['load_average_at_start'][0]:.2f}, "
        f"git {header['git']}",
        flush=True,
    )

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    result: dict = {"header": header, "throughput": []}
    code = 0
    try:
        prepare_database(db, base_env)
        setup_django(base_env)
        events = make_events(args.events, seed=42)
        for workers in args.worker_counts:
            result["throughput"].append(throughput_phase(run, workers, events))
        result["raw"] = raw_xadd_phase(run, events)
        if not args.skip_lag:
            result["lag"] = [lag_phase(run, concurrency) for concurrency in args.lag_levels]
    except KeyboardInterrupt:
        log("interrupted: stopping what this run started")
        code = 130
    except Exception as exc:
        log(f"error: {type(exc).__name__}: {exc}")
        result["error"] = f"{type(exc).__name__}: {exc}"
        code = 1
    finally:
        procs.stop_all()
        cleanup_redis(run)
        with contextlib.suppress(Exception):
            empty_outbox(db)
    if code == 130:
        return code
    print()
    print(format_table(result))
    for row in result["throughput"]:
        if not row["verify"]["ok"]:
            print(f"VERIFY FAILED for {row['workers']} workers: {row['verify']}")
            code = code or 1
    out_path = RESULTS_DIR / f"relay-{stamp}.json"
    write_json(out_path, result, default=str)
    print(
        f"\n{cores} cores; ratio = relay first→last entry events/s ÷ raw pipelined XADD/s. "
        f"results: {shown_path(out_path)}  logs: {shown_path(log_dir)}/"
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
