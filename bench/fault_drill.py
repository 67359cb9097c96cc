"""Fault drill: crash and restart every part of the system under a load of orders, then prove
that nothing was lost, duplicated or left stuck (issue 6, SPEC §2 invariant, §4, §5, §7).

    .venv/bin/python bench/fault_drill.py [--duration 45] [--payment-timeout 20]
        [--json report.json] [--keep]

What it does, on this machine only, with servers of its own:

1. starts a PRIVATE PostgreSQL and Redis on free ports (Redis with its append-only file on,
   as a production Redis carrying an event stream runs; the shared 5432/6379 are never
   touched), creates and migrates a database, an API client and four products (one scarce);
2. starts the fake provider, web (gunicorn, 2 workers), a Celery worker and beat;
3. runs a load of orders from client threads (unique Idempotency-Key per order, the SAME key
   retried on errors and timeouts as a correct client does; normal and `+decline` emails;
   some orders cancelled) while a monitor polls /readyz, and meanwhile:
   SIGKILLs the busiest gunicorn worker (the master respawns it), SIGKILLs the Celery worker
   (and starts a new one), SIGKILLs beat (and starts a new one), restarts PostgreSQL
   (SIGKILL, then start on the same data dir and port) and restarts Redis (stop, then start;
   its append-only file brings the stream, dedupe keys and queue back), while the fake
   provider hangs (SIGSTOP) for longer than the payment deadline, so that orders expire and
   late successes are refunded;
4. lets the system settle (bounded: no order pending, no outbox row pending) and checks:
   the stock invariant for every product; every outbox event in the stream exactly once and
   in version order per aggregate, each order's events complete; no order in
   pending_payment past its deadline; every order the client was told about exists and no
   other; /readyz went 503 naming the failing part during each outage and 200 afterwards;
   every process still alive (none gave up on a restarted server).

It prints a report (and writes it as JSON with --json) and exits 1 if any check failed,
2 if the drill itself could not run. Everything it started is stopped by pid on exit,
Ctrl-C, SIGTERM or error; the temporary directory is removed unless --keep.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import make_log, manage  # noqa: E402 - after the path set-up
from scripts.processes import (  # noqa: E402
    ManagedProcess,
    beat_command,
    cpu_seconds,
    provider_command,
    service_env,
    web_command,
    worker_command,
)
from scripts.servers import (  # noqa: E402
    child_pids,
    free_port,
    start_postgres,
    start_redis,
)
from scripts.waiting import wait_for  # noqa: E402

DB_NAME = "orders_drill"
NAMES = "drill"  # stream, queue, redbeat and cache prefixes inside the private Redis
STREAM = f"{NAMES}:events"
PRODUCTS = {  # sku: (price, initial stock)
    "DRILL-A": ("12.50", 1_000_000),
    "DRILL-B": ("3.10", 1_000_000),
    "DRILL-C": ("7.00", 1_000_000),
    "DRILL-SCARCE": ("99.00", 40),  # runs out: exercises 409 insufficient_stock and restocks
}
DECLINE_SHARE = 0.2
CANCEL_SHARE = 0.15
CLIENT_THREADS = 3
REQUEST_TIMEOUT = 8.0
OUTAGE_HOLD = 3.0  # seconds PostgreSQL / Redis stay down at least (until /readyz says so)
# Base windows of the waits for an event (scripts/waiting.py): what a quiet machine needs
# with a margin; each is scaled by the machine's measured slowness and extended while the
# awaited thing makes progress. No check depends on a wait being short.
STARTUP_WINDOW = 60.0
RESPAWN_WINDOW = 30.0
READY_WINDOW = 60.0
# Beat's own pace: a new beat takes over once the killed one's RedBeat lock (25 s) runs
# out and wakes at least every 5 s; the expiry task runs every 2 s (ORDER_EXPIRY_INTERVAL).
BEAT_WINDOW = 45.0


log = make_log("drill")


class WaitTimeout(RuntimeError):
    """A wait for an event ended without it: no progress for a whole (scaled) window."""


# --------------------------------------------------------------------------- processes


@dataclass
class Proc(ManagedProcess):
    """A service process that the drill kills and starts again; each start is headed in
    its log, which every generation shares."""

    generation: int = 0

    def start(self) -> Proc:
        self.generation += 1
        with self.log_path.open("ab") as out:
            out.write(f"\n===== start #{self.generation} at {time.ctime()}\n".encode())
        super().start()
        return self


# --------------------------------------------------------------------------- the drill


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    keys: int = 0  # orders attempted (one Idempotency-Key each)
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    problem_codes: Counter = field(default_factory=Counter)
    non_problem_5xx: int = 0
    connection_errors: int = 0
    timeouts: int = 0
    retries: int = 0
    replays: int = 0
    created: dict[str, str] = field(default_factory=dict)  # order id -> key
    refused: Counter = field(default_factory=Counter)  # final non-201 outcomes by code
    unresolved: list[str] = field(default_factory=list)
    cancels_requested: int = 0
    cancel_outcomes: Counter = field(default_factory=Counter)
    max_attempts: int = 0
    slow: list = field(default_factory=list)  # (t, seconds, method, path) of requests > 2 s
    max_latency: float = 0.0

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class Drill:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="orders-fault-drill-"))
        self.tmp.chmod(0o755)  # as root, PostgreSQL runs as `postgres` and must enter it
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.web_port = free_port()
        self.provider_port = free_port()
        self.pg = None
        self.redis = None
        self.procs: dict[str, Proc] = {}
        self.retired: list[Proc] = []  # killed generations, for the logs
        self.stats = Stats()
        self.stop_load = threading.Event()  # no new orders
        self.hard_stop = threading.Event()  # stop retrying too
        self.monitor_stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.readyz: list[tuple[float, str, tuple[str, ...]]] = []  # (t, status, failing)
        self.readyz_probes = 0
        self.faults: list[dict] = []
        self.t0 = time.monotonic()
        self.api_key = ""
        self.product_ids: dict[str, str] = {}
        self.report: dict = {"checks": {}}

    # ----------------------------------------------------------------- set-up

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def db_url(self) -> str:
        return self.pg.url_for(DB_NAME)

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def env(self) -> dict[str, str]:
        return service_env(
            database_url=self.db_url,
            redis_url=f"redis://127.0.0.1:{self.redis_port}/0",
            names=NAMES,
            metrics_dir=self.tmp / "prometheus",
            secret_key=self.secret_key,
            drop_prefixes=("PYTEST", "DJANGO"),
            DEBUG="0",
            PAYMENT_PROVIDER_URL=f"http://127.0.0.1:{self.provider_port}",
            PAYMENT_WEBHOOK_URL=f"{self.web_url}/api/v1/payments/webhook/",
            ORDER_PAYMENT_TIMEOUT=self.args.payment_timeout,
            ORDER_EXPIRY_INTERVAL="2",
            # The load is one client placing many orders: lift the limits, keep the shape.
            ORDER_RATE_LIMIT="1000000/60s",
            API_RATE_LIMIT="1000000/60s",
            # Short leases: work claimed by a killed worker is taken over within seconds.
            OUTBOX_LEASE_SECONDS="5",
            PAYMENT_STEP_LEASE_SECONDS="5",
            PAYMENT_PROVIDER_TIMEOUT="3",
            PORT=self.web_port,
            WEB_CONCURRENCY="2",
            WEB_GRACEFUL_TIMEOUT="5",
        )

    def manage(self, *argv: str) -> str:
        return manage(list(argv), self.env())

    def sql(self, query: str, params=()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.db_url, connect_timeout=5, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def redis_client(self):
        import redis

        return redis.Redis(
            port=self.redis_port, socket_timeout=5, socket_connect_timeout=2, decode_responses=True
        )

    def wait(
        self,
        predicate,
        *,
        what: str,
        window: float,
        progress=None,
        interval: float = 0.2,
        ceiling: float = 5.0,
    ):
        """wait_for() (scripts/waiting.py) logging each new progress reading, at most every
        5 s: a long wait shows what it waits on and that it moves (the drill's test reads
        its output as the drill's own progress)."""
        logged_at = 0.0

        def on_progress(reading) -> None:
            nonlocal logged_at
            if time.monotonic() - logged_at >= 5:
                logged_at = time.monotonic()
                log(f"  waiting for {what}: {reading}")

        return wait_for(
            predicate,
            what=what,
            timeout=window,
            progress=progress,
            interval=interval,
            ceiling=ceiling,
            error=WaitTimeout,
            on_progress=on_progress,
        )

    def set_up(self) -> None:
        import psycopg

        self.secret_key = secrets.token_urlsafe(40)
        log(f"private servers in {self.tmp}: PostgreSQL :{self.pg_port}, Redis :{self.redis_port}")
        self.pg = start_postgres(self.tmp / "pg", self.pg_port)
        self.redis = start_redis(self.tmp / "redis", self.redis_port, persist=True)
        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB_NAME}")
        (self.tmp / "prometheus").mkdir()
        log("migrating")
        self.manage("migrate", "--noinput", "-v", "0")
        self.api_key = self.manage("create_api_client", "fault-drill").strip().splitlines()[-1]
        spec = json.dumps({sku: list(value) for sku, value in PRODUCTS.items()})
        script = (
            "import json\nfrom catalog.models import Product\n"
            f"for sku, (price, stock) in json.loads({spec!r}).items():\n"
            "    p = Product.objects.create(sku=sku, name='Drill ' + sku, price=price, "
            "stock=stock)\n"
            "    print('PRODUCT', sku, p.id)\n"
        )
        for line in self.manage("shell", "-c", script).splitlines():
            if line.startswith("PRODUCT "):
                _, sku, pid = line.split()
                self.product_ids[sku] = pid

    def start_processes(self) -> None:
        env = self.env()
        self.procs["provider"] = Proc(
            "provider",
            provider_command(
                port=self.provider_port,
                webhook_url=env["PAYMENT_WEBHOOK_URL"],
                state_file=self.tmp / "provider-state.json",
                webhook_delay=0.5,
            ),
            env,
            self.tmp / "provider.log",
        )
        self.procs["web"] = Proc("web", web_command(), env, self.tmp / "web.log")
        self.procs["worker"] = self._worker_proc()
        self.procs["beat"] = self._beat_proc()
        for proc in self.procs.values():
            proc.start()
            log(f"started {proc.name} (pid {proc.pid})")
        web = self.procs["web"]
        web.wait_http_ok(
            f"{self.web_url}/readyz",
            timeout=STARTUP_WINDOW,
            what="web /readyz 200",
            interval=0.1,
            probe_timeout=2,
        )
        self.wait(
            lambda: len(child_pids(web.pid)) >= 2,
            what="2 web workers",
            window=RESPAWN_WINDOW,
            progress=web.progress,
        )

    def _worker_proc(self) -> Proc:
        n = len([p for p in self.retired if p.name == "worker"]) + 1
        argv = worker_command(hostname=f"drill-{n}-{uuid.uuid4().hex[:6]}@%h", concurrency=2)
        return Proc("worker", argv, self.env(), self.tmp / "worker.log")

    def _beat_proc(self) -> Proc:
        argv = beat_command(pidfile=self.tmp / "beat.pid", schedule=self.tmp / "beat-schedule")
        return Proc("beat", argv, self.env(), self.tmp / "beat.log")

    # ----------------------------------------------------------------- load

    def client_loop(self, index: int) -> None:
        import requests

        rng = random.Random(index)
        session = requests.Session()
        n = 0
        while not self.stop_load.is_set():
            n += 1
            order_id = self.place_order(session, rng, f"{index}-{n}")
            if order_id and rng.random() < CANCEL_SHARE:
                self.cancel_order(session, order_id)
            time.sleep(0.02)

    def _retry_pause(self, attempt: int, response=None) -> None:
        pause = min(2.0, 0.1 * 2 ** min(attempt, 5))
        if response is not None and response.headers.get("Retry-After", "").isdigit():
            pause = min(2.0, float(response.headers["Retry-After"]))
        time.sleep(pause * (0.5 + random.random() / 2))

    def _send(self, session, method: str, url: str, **kwargs):
        """One HTTP attempt; None on a connection error or timeout (counted)."""
        import requests

        self.stats.add(requests=1)
        started = time.monotonic()
        try:
            response = session.request(method, url, timeout=REQUEST_TIMEOUT, **kwargs)
        except requests.Timeout:
            self.stats.add(timeouts=1)
            return None
        except requests.ConnectionError:
            self.stats.add(connection_errors=1)
            return None
        finally:
            took = time.monotonic() - started
            with self.stats.lock:
                self.stats.max_latency = max(self.stats.max_latency, took)
                if took > 2:
                    self.stats.slow.append((self.now(), round(took, 2), method, url[-40:]))
        code = ""
        if response.headers.get("Content-Type", "").startswith("application/problem+json"):
            with contextlib.suppress(ValueError):
                code = response.json().get("code", "")
        with self.stats.lock:
            self.stats.statuses[response.status_code] += 1
            if code:
                self.stats.problem_codes[f"{response.status_code} {code}"] += 1
            elif response.status_code >= 500:
                self.stats.non_problem_5xx += 1
        response.problem_code = code
        return response

    def place_order(self, session, rng: random.Random, tag: str) -> str | None:
        key = f"drill-{uuid.uuid4()}"
        decline = rng.random() < DECLINE_SHARE
        email = f"drill-{tag}{'+decline' if decline else ''}@example.com"
        skus = rng.sample(sorted(self.product_ids), k=rng.choice([1, 1, 2]))
        if rng.random() < 0.3 and "DRILL-SCARCE" not in skus:
            skus.append("DRILL-SCARCE")
        body = {
            "email": email,
            "items": [
                {"product_id": self.product_ids[sku], "quantity": rng.randint(1, 3)} for sku in skus
            ],
        }
        headers = {"X-API-Key": self.api_key, "Idempotency-Key": key}
        self.stats.add(keys=1)
        attempt = 0
        while True:
            if self.hard_stop.is_set():
                with self.stats.lock:
                    self.stats.unresolved.append(key)
                return None
            attempt += 1
            if attempt > 1:
                self.stats.add(retries=1)
            with self.stats.lock:
                self.stats.max_attempts = max(self.stats.max_attempts, attempt)
            response = self._send(
                session, "POST", f"{self.web_url}/api/v1/orders/", json=body, headers=headers
            )
            if response is None or response.status_code >= 500:
                self._retry_pause(attempt)
                continue
            if response.status_code == 201:
                order_id = response.json()["id"]
                with self.stats.lock:
                    self.stats.created[order_id] = key
                    if response.headers.get("Idempotent-Replayed") == "true":
                        self.stats.replays += 1
                return order_id
            if response.status_code == 429 or response.problem_code == "idempotency_key_in_use":
                self._retry_pause(attempt, response)
                continue
            with self.stats.lock:  # a final business answer (stored, replayed if retried)
                self.stats.refused[f"{response.status_code} {response.problem_code}"] += 1
            return None

    def cancel_order(self, session, order_id: str) -> None:
        self.stats.add(cancels_requested=1)
        url = f"{self.web_url}/api/v1/orders/{order_id}/cancel/"
        attempt = 0
        while not self.hard_stop.is_set():
            attempt += 1
            response = self._send(session, "POST", url, headers={"X-API-Key": self.api_key})
            if response is None or response.status_code >= 500 or response.status_code == 429:
                self._retry_pause(attempt, response)
                continue
            with self.stats.lock:
                outcome = f"{response.status_code} {response.problem_code or 'ok'}".strip()
                self.stats.cancel_outcomes[outcome] += 1
            return
        with self.stats.lock:
            self.stats.cancel_outcomes["unresolved"] += 1

    def readyz_loop(self) -> None:
        import requests

        last = None
        while not self.monitor_stop.is_set():
            try:
                response = requests.get(f"{self.web_url}/readyz", timeout=3)
                status = str(response.status_code)
                failing = ()
                if response.status_code == 503:
                    with contextlib.suppress(ValueError):
                        failing = tuple(response.json().get("failing", ()))
            except Exception as exc:
                status, failing = f"no answer ({type(exc).__name__})", ()
            self.readyz_probes += 1
            if (status, failing) != last:
                self.readyz.append((self.now(), status, failing))
                last = (status, failing)
            time.sleep(0.2)

    # ----------------------------------------------------------------- faults

    def fault(self, name: str, action) -> None:
        start = self.now()
        log(f"fault: {name}")
        record = {"fault": name, "start": start}
        try:
            record.update(action() or {})
            record["ok"] = record.get("ok", True)
        except Exception as exc:
            record.update(ok=False, error=f"{type(exc).__name__}: {exc}")
            log(f"fault {name} did not go as planned: {record['error']}")
        record["end"] = self.now()
        self.faults.append(record)

    def provider_outage(self) -> None:
        """The provider hangs past the payment deadline, and on until an order placed
        meanwhile has expired: expiry needs a beat tick after the deadline, and beat may be
        down or waiting to take over from a killed one by then, for longer on a busy
        machine. Orders expired before the hang began do not count."""
        hold = self.args.payment_timeout + 6

        def action() -> dict:
            provider = self.procs["provider"]
            expired_before = self.expired_orders()
            provider.pause()
            paused_at = time.monotonic()
            expired_at = None
            try:
                self.hard_stop.wait(hold)
                with contextlib.suppress(WaitTimeout):
                    self.wait(
                        lambda: self.expired_orders() > expired_before,
                        what="an order to expire while the provider hangs",
                        window=BEAT_WINDOW,
                        progress=self.expiry_progress,
                        interval=0.5,
                    )
                    expired_at = self.now()
            finally:
                provider.resume()
            held = time.monotonic() - paused_at
            return {
                "detail": f"provider SIGSTOPped for {held:.1f}s (at least {hold}s, then until "
                f"an order expired: {'at ' + str(expired_at) + 's' if expired_at else 'NEVER'}"
                "), then SIGCONT"
            }

        self.fault("provider hangs", action)

    def expired_orders(self) -> int:
        try:
            return self.sql(
                "SELECT count(*) FROM orders_order WHERE cancel_reason = 'payment_expired'"
            )[0][0]
        except Exception:  # PostgreSQL restarting: not yet
            return 0

    def expiry_progress(self) -> tuple:
        """What moves while an expiry is on its way: beat sending the expiry task, orders
        reaching their deadline."""
        overdue = self.sql(
            "SELECT count(*) FROM orders_order "
            "WHERE status = 'pending_payment' AND expires_at < now()"
        )[0][0]
        return self.beat_runs("expire-overdue-orders"), overdue

    def kill_web_worker(self) -> dict:
        master = self.procs["web"].pid
        workers = sorted(child_pids(master))
        # The busiest worker (most CPU over a short sample): likely mid-request, so a client
        # sees its connection reset and must retry with the same key.
        before = {pid: cpu_seconds(pid) for pid in workers}
        time.sleep(0.15)
        victim = max(workers, key=lambda pid: cpu_seconds(pid) - before[pid])
        os.kill(victim, signal.SIGKILL)

        def respawned() -> bool:
            now = child_pids(master)
            return victim not in now and len(now) >= len(workers)

        web = self.procs["web"]
        self.wait(
            respawned,
            what="gunicorn to respawn the worker",
            window=RESPAWN_WINDOW,
            progress=web.progress,
        )
        new = sorted(set(child_pids(master)) - set(workers))
        return {"detail": f"SIGKILL worker {victim}; master {master} respawned {new}"}

    def _restart(self, name: str, factory, after_kill=None) -> dict:
        old = self.procs[name]
        old.kill()
        self.retired.append(old)
        record = after_kill() if after_kill else {}
        time.sleep(1.0)
        new = factory()
        new.generation = old.generation
        self.procs[name] = new.start()
        time.sleep(2.0)
        self.procs[name].check_alive()
        return {**record, "detail": f"SIGKILL group {old.pid}; new {name} pid {new.pid}"}

    def kill_celery_worker(self) -> dict:
        return self._restart("worker", self._worker_proc)

    def kill_beat(self) -> dict:
        # Counted once the old beat is dead (it can send nothing more): only the new beat
        # can move the count past this.
        return self._restart(
            "beat", self._beat_proc, lambda: {"relay_runs_before": self.beat_runs()}
        )

    def beat_runs(self, entry: str = "relay-outbox") -> int | None:
        """How often beat has sent an entry's task (RedBeat's meta for that entry)."""
        with contextlib.suppress(Exception):
            client = self.redis_client()
            keys = [
                key
                for key in client.zrange(f"{NAMES}:redbeat:schedule", 0, -1)
                if key.endswith(entry)
            ]
            meta = client.hget(keys[0], "meta") if keys else None
            return json.loads(meta).get("total_run_count", 0) if meta else 0
        return None

    def beat_ticked_since_restart(self) -> bool:
        before = next((f["relay_runs_before"] for f in self.faults if "relay_runs_before" in f), 0)
        runs = self.beat_runs()
        return runs is not None and before is not None and runs > before

    def _outage(self, part: str, failing: str, down, up) -> dict:
        down()
        went_down = self.now()
        time.sleep(OUTAGE_HOLD)
        # Down until the monitor has seen /readyz 503 naming it (or looked several times
        # more): the check below needs it to have looked, and a monitor starved of CPU may
        # take longer than OUTAGE_HOLD to.
        probes = self.readyz_probes
        with contextlib.suppress(WaitTimeout):
            self.wait(
                lambda: self.saw_503(failing, since=went_down) or self.readyz_probes - probes >= 5,
                what=f"the monitor to look at /readyz while {part} is down",
                window=READY_WINDOW,
            )
        up()
        back_up = self.now()
        saw_200 = self._wait_ready()
        return {
            "down_at": went_down,
            "up_at": back_up,
            "ready_again_at": saw_200,
            "ok": saw_200 is not None,
            "detail": f"{part} down {went_down:.1f}s → restarted {back_up:.1f}s, "
            f"/readyz 200 again at {saw_200}",
        }

    def saw_503(self, failing: str, *, since: float) -> bool:
        return any(
            t >= since and status == "503" and failing in parts
            for t, status, parts in list(self.readyz)
        )

    def _wait_ready(self) -> float | None:
        import requests

        def ready() -> bool:
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"{self.web_url}/readyz", timeout=2).status_code == 200
            return False

        try:
            self.wait(ready, what="/readyz 200", window=READY_WINDOW)
        except WaitTimeout:
            return None
        return self.now()

    def restart_postgres(self) -> dict:
        def up():
            self.pg = start_postgres(self.tmp / "pg", self.pg_port)

        return self._outage("PostgreSQL", "database", self.pg.kill, up)

    def restart_redis(self) -> dict:
        def up():
            self.redis = start_redis(self.tmp / "redis", self.redis_port, persist=True)

        return self._outage("Redis", "redis", self.redis.stop, up)

    # ----------------------------------------------------------------- figures & checks

    def figures(self) -> dict:
        orders = dict(
            self.sql(
                "SELECT status || COALESCE(NULLIF(' ' || cancel_reason, ' '), ''), count(*) "
                "FROM orders_order GROUP BY 1 ORDER BY 1"
            )
        )
        outbox = dict(self.sql("SELECT status, count(*) FROM outbox_outboxevent GROUP BY status"))
        payments = dict(self.sql("SELECT status, count(*) FROM payments_payment GROUP BY status"))
        stock = dict(self.sql("SELECT sku, stock FROM catalog_product ORDER BY sku"))
        try:
            stream = self.redis_client().xlen(STREAM)
        except Exception as exc:
            stream = f"unreadable: {type(exc).__name__}"
        return {
            "t": self.now(),
            "orders": orders,
            "outbox": outbox,
            "payments": payments,
            "stream_length": stream,
            "stock": stock,
        }

    def settle(self) -> dict:
        """Wait until no order is pending, no outbox row is pending, the saga owes the
        provider no call and the restarted beat has sent the relay task. The window is
        long enough on a quiet machine for an unpaid order to expire, its payment to be
        cancelled and its events to be relayed; it is scaled by the machine's slowness and
        extended while any of those counts moves."""
        start = self.now()
        state: dict = {}

        def settled() -> bool:
            try:
                (pending_orders,) = self.sql(
                    "SELECT count(*) FROM orders_order WHERE status = 'pending_payment'"
                )[0]
                (pending_events,) = self.sql(
                    "SELECT count(*) FROM outbox_outboxevent WHERE status = 'pending'"
                )[0]
                # refund_pending: the provider still owes us its refund webhook, which
                # writes a payment.refunded event; a waiting webhook may still apply.
                (owed_steps,) = self.sql(
                    "SELECT count(*) FROM payments_payment WHERE status IN "
                    "('requesting', 'cancel_requested', 'refund_requested', 'refund_pending')"
                )[0]
                (waiting_webhooks,) = self.sql(
                    "SELECT count(*) FROM payments_webhookinboxentry WHERE status = 'waiting'"
                )[0]
            except Exception as exc:  # counted as no progress, and not settled
                state["error"] = f"{type(exc).__name__}: {exc}"
                return False
            state.update(
                pending_orders=pending_orders,
                pending_events=pending_events,
                payment_steps_owed=owed_steps,
                webhooks_waiting=waiting_webhooks,
                relay_runs=self.beat_runs(),
            )
            state.pop("error", None)
            idle = pending_orders == pending_events == owed_steps == waiting_webhooks == 0
            # Idle on two looks in a row: a webhook applied between the counts above (a
            # late success refunded, say) writes its event after we looked.
            was_idle, state["idle_looks"] = state.get("idle_looks", 0), 0
            if idle:
                state["idle_looks"] = was_idle + 1
            return state["idle_looks"] >= 2 and self.beat_ticked_since_restart()

        try:
            self.wait(
                settled,
                what="the system to settle",
                window=self.args.payment_timeout + 45,
                progress=lambda: tuple(state.values()),
                interval=0.5,
            )
        except WaitTimeout as exc:
            return {
                "settled": False,
                "seconds": round(self.now() - start, 1),
                **state,
                "error": str(exc),
            }
        return {"settled": True, "seconds": round(self.now() - start, 1)}

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.report["checks"][name] = {"ok": bool(ok), "detail": detail}

    def run_checks(self) -> None:
        # 1. the stock invariant, per product
        rows = self.sql(
            """
            SELECT p.sku, p.stock, COALESCE(SUM(i.quantity)
                   FILTER (WHERE o.status <> 'cancelled'), 0)
            FROM catalog_product p
            LEFT JOIN orders_orderitem i ON i.product_id = p.id
            LEFT JOIN orders_order o ON o.id = i.order_id
            GROUP BY p.sku, p.stock ORDER BY p.sku
            """
        )
        lines, ok = [], True
        for sku, stock, reserved in rows:
            initial = PRODUCTS[sku][1]
            good = stock == initial - reserved
            ok &= good
            lines.append(
                f"{sku}: initial {initial} − reserved {reserved} = {initial - reserved}, "
                f"stock {stock} {'OK' if good else 'MISMATCH'}"
            )
        self.report["stock"] = lines
        self.check("stock invariant", ok, "; ".join(lines))

        # 2. every outbox event in the stream exactly once, in version order per aggregate
        outbox = self.sql(
            "SELECT id::text, aggregate_type, aggregate_id, version, type, status "
            "FROM outbox_outboxevent"
        )
        entries = []
        client = self.redis_client()
        last = "-"
        while True:
            batch = client.xrange(STREAM, min=last, max="+", count=5000)
            if last != "-":
                batch = batch[1:]
            if not batch:
                break
            entries += batch
            last = batch[-1][0]
        stream_ids = [fields["id"] for _, fields in entries]
        dupes = [i for i, n in Counter(stream_ids).items() if n > 1]
        outbox_ids = {row[0] for row in outbox}
        missing = outbox_ids - set(stream_ids)
        unexpected = set(stream_ids) - outbox_ids
        not_published = Counter(row[5] for row in outbox if row[5] != "published")
        per_aggregate: dict[tuple[str, str], list[int]] = defaultdict(list)
        for _, fields in entries:
            per_aggregate[(fields["aggregate_type"], fields["aggregate_id"])].append(
                int(fields["version"])
            )
        out_of_order = [k for k, versions in per_aggregate.items() if versions != sorted(versions)]
        gaps = [
            key
            for key, versions in per_aggregate.items()
            if sorted(versions) != list(range(1, len(versions) + 1))
        ]
        by_type = Counter(row[4] for row in outbox)
        self.report["events"] = {
            "outbox_rows": len(outbox),
            "stream_entries": len(entries),
            "by_type": dict(sorted(by_type.items())),
            "duplicates": len(dupes),
            "missing_from_stream": len(missing),
            "unexpected_in_stream": len(unexpected),
            "not_published": dict(not_published),
            "aggregates_out_of_order": len(out_of_order),
            "aggregates_with_gaps": len(gaps),
        }
        self.check(
            "events exactly once",
            not dupes and not missing and not unexpected and not not_published,
            f"{len(outbox)} outbox rows, {len(entries)} stream entries, {len(dupes)} duplicates, "
            f"{len(missing)} missing, {len(unexpected)} unexpected, not published: "
            f"{dict(not_published) or 0}",
        )
        self.check(
            "events in version order",
            not out_of_order and not gaps,
            f"{len(per_aggregate)} aggregates, {len(out_of_order)} out of order, "
            f"{len(gaps)} with gaps" + (f" e.g. {out_of_order[:2] or gaps[:2]}" if gaps else ""),
        )

        # 3. each order's own events: created first, then its final state's event
        orders = self.sql("SELECT id::text, status, cancel_reason, event_version FROM orders_order")
        types: dict[str, dict[int, str]] = defaultdict(dict)
        for _, fields in entries:
            if fields["aggregate_type"] == "order":
                types[fields["aggregate_id"]][int(fields["version"])] = fields["type"]
        wrong = []
        for order_id, status, reason, version in orders:
            seen = types.get(order_id, {})
            expected_last = {"paid": "order.paid", "cancelled": "order.cancelled"}.get(status)
            if (
                sorted(seen) != list(range(1, version + 1))
                or seen.get(1) != "order.created"
                or (expected_last and seen.get(version) != expected_last)
            ):
                wrong.append((order_id, status, reason, seen))
        self.check(
            "every order's events",
            not wrong,
            f"{len(orders)} orders, {len(wrong)} with missing or wrong events"
            + (f": {wrong[:3]}" if wrong else ""),
        )

        expired = self.sql(
            "SELECT count(*) FROM orders_order WHERE cancel_reason = 'payment_expired'"
        )[0][0]
        self.check(
            "expiry exercised",
            expired > 0,
            f"{expired} orders cancelled as payment_expired while the provider hung",
        )

        # 4. nothing stuck past its deadline
        stuck = self.sql(
            "SELECT id::text, expires_at FROM orders_order "
            "WHERE status = 'pending_payment' AND expires_at < now()"
        )
        self.check(
            "no order pending past its deadline",
            not stuck,
            f"{len(stuck)} stuck" + (f": {stuck[:3]}" if stuck else ""),
        )

        # 5. the client's view: every order it was told about exists, and no other
        db_orders = {row[0] for row in orders}
        told = set(self.stats.created)
        self.check(
            "orders acknowledged == orders stored",
            told == db_orders and not self.stats.unresolved,
            f"{len(told)} acknowledged with 201, {len(db_orders)} in the database, "
            f"{len(told - db_orders)} acknowledged but missing, {len(db_orders - told)} stored "
            f"but never acknowledged, {len(self.stats.unresolved)} keys unresolved",
        )

        # 6. /readyz went 503 naming the part during each outage, and came back
        for fault in self.faults:
            if "down_at" not in fault:
                continue
            part = "database" if fault["fault"] == "restart PostgreSQL" else "redis"
            window = [
                (t, status, failing)
                for t, status, failing in self.readyz
                if fault["start"] <= t <= fault["up_at"] + 1
            ]
            saw_503 = any(s == "503" and part in failing for _, s, failing in window)
            came_back = fault.get("ready_again_at") is not None
            self.check(
                f"/readyz during {fault['fault']}",
                saw_503 and came_back,
                f"503 naming {part}: {'yes' if saw_503 else 'NO'}; 200 again at "
                f"{fault.get('ready_again_at')}s",
            )
        final = self.readyz[-1] if self.readyz else None
        self.check(
            "/readyz 200 at the end", bool(final and final[1] == "200"), f"last seen {final}"
        )

        # 7. every fault went as planned, and every process is still up (none gave up)
        self.check(
            "faults injected",
            all(f["ok"] for f in self.faults),
            "; ".join(f"{f['fault']}: {'ok' if f['ok'] else f.get('error')}" for f in self.faults),
        )
        dead = {n: p.returncode for n, p in self.procs.items() if not p.alive}
        self.check("processes alive", not dead, f"exited: {dead}" if dead else "all running")
        runs = self.beat_runs()
        before = next((f["relay_runs_before"] for f in self.faults if "relay_runs_before" in f), 0)
        self.check(
            "beat scheduling after its restart",
            runs is not None and before is not None and runs > before,
            f"relay sent {before} times before the beat kill, {runs} by the end",
        )

        # 8. errors the client saw: 5xx only as clean 503 problems during outages
        other_5xx = {
            code: n
            for code, n in self.stats.problem_codes.items()
            if code.startswith("5") and not code.startswith("503")
        }
        self.check(
            "5xx are clean problem+json 503s",
            not other_5xx and self.stats.non_problem_5xx == 0,
            f"5xx by code: { {c: n for c, n in self.stats.problem_codes.items() if c[0] == '5'} }, "
            f"non-problem 5xx: {self.stats.non_problem_5xx}",
        )

    # ----------------------------------------------------------------- main flow

    def run(self) -> int:
        self.set_up()
        self.start_processes()
        self.report["before"] = self.figures()
        self.report["initial_stock"] = {sku: stock for sku, (_, stock) in PRODUCTS.items()}
        monitor = threading.Thread(target=self.readyz_loop, daemon=True, name="readyz")
        monitor.start()
        for index in range(CLIENT_THREADS):
            thread = threading.Thread(target=self.client_loop, args=(index,), daemon=True)
            thread.start()
            self.threads.append(thread)
        log(f"load running ({CLIENT_THREADS} client threads) for {self.args.duration}s")

        faults = [
            ("SIGKILL a gunicorn worker", self.kill_web_worker),
            ("SIGKILL the Celery worker", self.kill_celery_worker),
            ("restart PostgreSQL", self.restart_postgres),
            ("restart Redis", self.restart_redis),
            # Last: a new beat waits up to RedBeat's lock timeout (25 s) to take over, and
            # the expiry of the orders placed while the provider hangs needs a beat.
            ("SIGKILL beat", self.kill_beat),
        ]
        load_end = time.monotonic() + self.args.duration
        # The provider hangs (SIGSTOP) for longer than the payment deadline, overlapping the
        # other faults: orders placed meanwhile expire, late successes get refunded.
        pause = threading.Thread(target=self.provider_outage, daemon=True, name="provider")
        gap = max(2.0, (self.args.duration - 6) / (len(faults) + 1))
        time.sleep(min(gap, 5))
        self.report["at_first_fault"] = self.figures()
        pause.start()
        for name, action in faults:
            self.fault(name, action)
            time.sleep(max(0.0, min(gap, load_end - time.monotonic() - 2)))
        # Load goes on for a while after the last recovery: the system serves again.
        time.sleep(max(5.0, load_end - time.monotonic()))
        self.stop_load.set()
        log("load stopped; letting clients finish their retries")
        # Clients finish the order each is on (retrying as long as answers say so); the
        # provider's hang ends by itself (provider_outage). Both waits are bounded by
        # progress: orders resolved, and the hang's own waits. (Past them, hard_stop ends
        # what is left, and the checks count it as unresolved.)
        with contextlib.suppress(WaitTimeout):
            self.wait(
                lambda: not any(thread.is_alive() for thread in self.threads),
                what="the clients to finish their retries",
                window=60,
                progress=self.resolved_keys,
            )
        with contextlib.suppress(WaitTimeout):
            self.wait(
                lambda: not pause.is_alive(),
                what="the provider's hang to end",
                window=self.args.payment_timeout + BEAT_WINDOW,
                progress=self.expiry_progress,
                interval=0.5,
            )
        self.hard_stop.set()
        log("settling")
        self.report["settle"] = self.settle()
        probes = self.readyz_probes  # the monitor's view after settling: two more looks
        with contextlib.suppress(WaitTimeout):
            self.wait(lambda: self.readyz_probes >= probes + 2, what="/readyz", window=10)
        self.monitor_stop.set()
        monitor.join(timeout=5)
        self.report["after"] = self.figures()
        self.faults.sort(key=lambda fault: fault["start"])
        self.report["faults"] = self.faults
        self.report["readyz_transitions"] = self.readyz
        self.report["readyz_probes"] = self.readyz_probes
        self.report["client"] = self.client_figures()
        self.run_checks()
        if not self.report["settle"]["settled"]:
            self.check("settled", False, json.dumps(self.report["settle"]))
        self.report["ok"] = all(c["ok"] for c in self.report["checks"].values())
        return 0 if self.report["ok"] else 1

    def resolved_keys(self) -> int:
        s = self.stats
        with s.lock:
            return len(s.created) + sum(s.refused.values()) + sum(s.cancel_outcomes.values())

    def client_figures(self) -> dict:
        s = self.stats
        return {
            "orders_attempted": s.keys,
            "orders_created": len(s.created),
            "requests": s.requests,
            "retries": s.retries,
            "max_attempts_for_one_key": s.max_attempts,
            "replayed_201": s.replays,
            "refused": dict(s.refused),
            "statuses": dict(sorted(s.statuses.items())),
            "5xx": sum(n for code, n in s.statuses.items() if code >= 500),
            "5xx_by_code": {c: n for c, n in s.problem_codes.items() if c.startswith("5")},
            "problem_codes": dict(sorted(s.problem_codes.items())),
            "connection_errors": s.connection_errors,
            "timeouts": s.timeouts,
            "cancels_requested": s.cancels_requested,
            "cancel_outcomes": dict(s.cancel_outcomes),
            "unresolved_keys": len(s.unresolved),
            "max_latency_s": round(s.max_latency, 2),
            "requests_over_2s": len(s.slow),
            "slow_examples": s.slow[:5],
        }

    def clean_up(self) -> None:
        self.stop_load.set()
        self.hard_stop.set()
        self.monitor_stop.set()
        for name in ("web", "worker", "beat", "provider"):
            if name in self.procs:
                self.procs[name].stop(timeout=10)
        for proc in self.retired:
            proc.kill()
        for server in (self.redis, self.pg):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
        if self.args.keep:
            log(f"kept {self.tmp} (logs, data dirs)")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def print_logs(self) -> None:
        for proc in [*self.procs.values()]:
            print(f"----- {proc.name} log tail ({proc.log_path})", file=sys.stderr)
            print(proc.log_tail(25) or "(no log)", file=sys.stderr)


# --------------------------------------------------------------------------- report


def print_report(report: dict) -> None:
    out = []
    w = out.append
    w("=" * 78)
    w("FAULT DRILL REPORT")
    w("=" * 78)
    c = report.get("client", {})
    if c:
        w(
            f"client: {c['orders_attempted']} orders attempted, {c['orders_created']} created, "
            f"refused {c['refused'] or 'none'}"
        )
        w(
            f"        {c['requests']} requests ({c['retries']} retries with the same key, "
            f"max {c['max_attempts_for_one_key']} attempts for one key, "
            f"{c['replayed_201']} replayed 201s)"
        )
        w(
            f"        5xx seen: {c['5xx']} {c['5xx_by_code'] or ''}; connection errors "
            f"{c['connection_errors']}, timeouts {c['timeouts']}; statuses {c['statuses']}"
        )
        w(f"        problems by code: {c['problem_codes']}")
        w(
            f"        cancels: {c['cancels_requested']} requested → {c['cancel_outcomes']}; "
            f"unresolved keys: {c['unresolved_keys']}"
        )
        w(
            f"        latency: max {c['max_latency_s']}s, {c['requests_over_2s']} requests over "
            f"2 s {c['slow_examples'] or ''}"
        )
    for label in ("before", "at_first_fault", "after"):
        fig = report.get(label)
        if fig:
            w(
                f"{label:>15} (t={fig['t']:>6}s): orders {fig['orders'] or {}}; outbox "
                f"{fig['outbox'] or {}}; stream {fig['stream_length']}; payments "
                f"{fig['payments'] or {}}"
            )
    if report.get("before") and report.get("after"):
        w("stock before → after:")
        for sku, before in report["before"]["stock"].items():
            w(f"   {sku:<14} {before:>9} → {report['after']['stock'].get(sku):>9}")
    for line in report.get("stock", []):
        w(f"   invariant {line}")
    if report.get("events"):
        w(f"events: {report['events']}")
    w("faults:")
    for fault in report.get("faults", []):
        status = "ok" if fault["ok"] else f"FAILED {fault.get('error', '')}"
        w(f"   t={fault['start']:>6}s {fault['fault']:<28} {status}: {fault.get('detail', '')}")
    w(f"/readyz transitions ({report.get('readyz_probes')} probes; t, status, failing):")
    for t, status, failing in report.get("readyz_transitions", []):
        w(f"   t={t:>6}s {status} {', '.join(failing)}")
    if report.get("settle"):
        w(f"settle: {report['settle']}")
    w("checks:")
    for name, check in report.get("checks", {}).items():
        w(f"   [{'PASS' if check['ok'] else 'FAIL'}] {name}: {check['detail']}")
    w(f"RESULT: {'OK' if report.get('ok') else 'FAILED'}")
    print("\n".join(out), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=45, help="seconds of load (≥ 20)")
    parser.add_argument("--payment-timeout", type=int, default=20, help="ORDER_PAYMENT_TIMEOUT")
    parser.add_argument("--json", type=Path, help="also write the report here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = parser.parse_args(argv)
    args.duration = max(20.0, args.duration)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    drill = Drill(args)
    code = 2
    try:
        code = drill.run()
    except (Exception, KeyboardInterrupt) as exc:
        log(f"drill aborted: {type(exc).__name__}: {exc}")
        drill.report["ok"] = False
        drill.report["error"] = f"{type(exc).__name__}: {exc}"
        code = 2
    finally:
        if code != 0:
            drill.print_logs()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # clean-up is not to be interrupted
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        drill.clean_up()
    print_report(drill.report)
    if args.json:
        args.json.write_text(json.dumps(drill.report, indent=2, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
