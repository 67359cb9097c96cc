"""Fixtures of the payment saga tests: the real processes of the system, wired together.

A *stack* is the web process (gunicorn, which the provider calls back), a Celery worker and
Celery beat, started from this repo's virtualenv with the real settings module and pointed by
environment at pytest's test database and at a Redis server private to this test session
(broker, redbeat, event stream, cache, rate limits): nobody else's Celery on the shared Redis
can see our tasks or control messages, and ours cannot see theirs.

Stacks are module-scoped: a test module sets `STACK_ENV` (e.g. a 2 s ORDER_PAYMENT_TIMEOUT)
and gets a stack of its own. The fake provider is per test (`provider`), so no webhook of one
test reaches the next; it always listens on the stack's provider port, so the worker's
PAYMENT_PROVIDER_URL stays right across the provider's restarts.

Every process runs in its own process group and is stopped by its pid (SIGTERM, then
SIGKILL); the tails of the logs each test produced are printed at its teardown, which pytest
shows when the test failed.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from django.db import connection
from django.utils import timezone

from payments.models import Payment
from scripts.processes import (
    REPO,
    ManagedProcess,
    beat_command,
    database_url,
    provider_command,
    service_env,
    start_process,
    stop_all,
    web_command,
    worker_command,
)
from scripts.servers import free_port, start_redis
from tests.event_contract import stop_after_checking_streams
from tests.factories import make_api_client
from tests.payments.helpers import PROVIDER_TOKEN, WEBHOOK_SECRET, Shop, provider_auth
from tests.polling import eventually, processes_progress


@dataclass
class Stack:
    """Web, worker and beat of one test module, and the names/ports they were given."""

    root: Path
    redis_url: str
    extra_env: dict[str, str]
    web_port: int = field(default_factory=free_port)
    provider_port: int = field(default_factory=free_port)
    names: str = field(default_factory=lambda: f"payments-{uuid.uuid4().hex[:8]}")
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    @property
    def stream(self) -> str:
        return f"{self.names}:events"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.web_url}/api/v1/payments/webhook/"

    @property
    def provider_url(self) -> str:
        return f"http://127.0.0.1:{self.provider_port}"

    def env(self, **overrides: str) -> dict[str, str]:
        env = service_env(
            database_url=database_url(connection.settings_dict),  # after django_db_setup
            redis_url=self.redis_url,
            names=self.names,
            metrics_dir=self.root / "prometheus",
            DEBUG="0",
            PAYMENT_PROVIDER_URL=self.provider_url,
            PAYMENT_WEBHOOK_URL=self.webhook_url,
            PAYMENT_WEBHOOK_SECRETS=WEBHOOK_SECRET,
            # Short retries keep the outage tests short; the schedule's shape is the same.
            PAYMENT_RETRY_BACKOFF="1,1,2",
            PAYMENT_PROVIDER_TIMEOUT="2",
            OUTBOX_RELAY_INTERVAL="1",
            ORDER_EXPIRY_INTERVAL="1",
            # Polling and placing hundreds of orders is not what these tests are about.
            API_RATE_LIMIT="100000/60s",
            ORDER_RATE_LIMIT="100000/60s",
        )
        return env | self.extra_env | overrides

    def _start(
        self, name: str, argv: list[str], *, cwd: Path | None = None, **env: str
    ) -> ManagedProcess:
        process = start_process(
            name, argv, self.env(**env), self.root / f"{name}.log", cwd=cwd or self.root
        )
        self.processes[name] = process
        return process

    def start_web(self) -> ManagedProcess:
        process = self._start(
            "web",
            web_command(),
            cwd=REPO,
            PORT=str(self.web_port),
            WEB_CONCURRENCY="2",
            WEB_THREADS="4",
        )
        process.wait_http_ok(
            f"{self.web_url}/healthz", timeout=60, what="gunicorn answering /healthz"
        )
        return process

    def start_worker(self) -> ManagedProcess:
        return self._start(
            "worker",
            worker_command(hostname=f"payments-{uuid.uuid4().hex[:6]}@%h", concurrency=2),
        )

    def start_beat(self) -> ManagedProcess:
        return self._start(
            "beat",
            beat_command(pidfile=self.root / "beat.pid", schedule=self.root / "beat-schedule"),
        )

    def restart_web(self) -> ManagedProcess:
        self.processes["web"].stop()
        return self.start_web()

    def alive(self) -> list[ManagedProcess]:
        return list(self.processes.values())

    def stop(self) -> None:
        # All at once: each drains its in-flight work in parallel with the others.
        stop_all(self.processes.values())


@pytest.fixture(scope="session")
def payments_redis():
    """A redis-server of this test session only (broker, stream, cache of the processes)."""
    data_dir = Path(tempfile.mkdtemp(prefix="payments-redis-"))
    server = start_redis(data_dir, free_port())
    yield server
    stop_after_checking_streams(server)


@pytest.fixture(scope="module")
def stack(request, django_db_setup, payments_redis, tmp_path_factory):
    """Web + worker + beat for this module, with the module's STACK_ENV on top."""
    root = tmp_path_factory.mktemp("stack")
    (root / "prometheus").mkdir()
    running = Stack(
        root=root,
        redis_url=payments_redis.url,
        extra_env=dict(getattr(request.module, "STACK_ENV", {})),
    )
    try:
        running.start_worker()
        running.start_beat()
        running.start_web()
        yield running
    finally:
        running.stop()


class Provider:
    """The fake provider process of one test: start, stop, kill, restart, chaos, reads."""

    def __init__(self, stack: Stack, root: Path) -> None:
        self.stack = stack
        self.root = root
        self.state_file = root / "provider-state.json"
        self.process: ManagedProcess | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return self.stack.provider_url

    def start(
        self,
        *,
        webhook_delay: float = 0.3,
        error_rate: float = 0,
        latency: float = 0,
        duplicate_rate: float = 0,
        out_of_order: float = 0,
    ) -> Provider:
        """Start (or restart, with the same port and state file) the provider process."""
        assert self.process is None or not self.process.is_running(), "already running"
        self.starts += 1
        argv = provider_command(
            port=self.stack.provider_port,
            webhook_url=self.stack.webhook_url,
            state_file=self.state_file,
            webhook_secret=WEBHOOK_SECRET,
            webhook_delay=webhook_delay,
            error_rate=error_rate,
            latency=latency,
            duplicate_rate=duplicate_rate,
            out_of_order=out_of_order,
        )
        # The token by environment, not argv: it stays out of `ps`.
        self.process = start_process(
            "provider",
            argv,
            self.stack.env(FAKE_PROVIDER_TOKEN=PROVIDER_TOKEN),
            self.root / "provider.log",
            cwd=REPO,
        )
        self.process.wait_http_ok(
            f"{self.url}/healthz", timeout=30, what="fake provider answering /healthz", interval=0.1
        )
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def kill(self) -> None:
        if self.process:
            self.process.kill()

    def chaos(self, **switches: float) -> dict:
        response = requests.post(
            f"{self.url}/_chaos", json=switches, headers=provider_auth(), timeout=5
        )
        response.raise_for_status()
        return response.json()

    def payments(self, order_id=None) -> list[dict]:
        query = f"?order_id={order_id}" if order_id else ""
        response = requests.get(
            f"{self.url}/v1/payments{query}", headers=provider_auth(), timeout=5
        )
        response.raise_for_status()
        return response.json()["results"]


@pytest.fixture
def provider(stack, transactional_db, tmp_path):
    """The fake provider of this test (not started: tests choose its switches).

    Depends on transactional_db, so it is stopped before the database is flushed; the logs
    this test produced are printed at teardown (pytest shows them when the test failed).
    """
    for process in stack.processes.values():
        process.mark_log()
    handle = Provider(stack, tmp_path)
    try:
        yield handle
    finally:
        handle.stop()
        for process in [*stack.processes.values(), handle.process]:
            if process is None:
                continue
            state = "running" if process.alive else f"exited {process.returncode}"
            print(f"----- {process.name} (pid {process.pid}, {state})")
            print(process.log_tail(since_mark=True) or "(nothing logged)")
        # A step or webhook of this test still in flight must finish before the flush, or
        # it would write into the next test's (empty) tables.
        wait_for_in_flight_work(stack)


def _in_flight() -> dict[str, int]:
    """Work of the stack's processes under way right now: payment steps leased by a worker
    (calling the provider), and database sessions of the stack inside a transaction (a
    webhook being applied, a step being recorded). pytest's own session is not counted."""
    leased = Payment.objects.filter(
        lease_token__isnull=False, lease_expires_at__gt=timezone.now()
    ).count()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
            "AND xact_start IS NOT NULL"
        )
        (in_transaction,) = cursor.fetchone()
    return {"leased steps": leased, "sessions in a transaction": in_transaction}


def wait_for_in_flight_work(stack: Stack, quiet_polls: int = 3) -> None:
    """Wait until no payment step is leased and no session of the stack is inside a
    transaction, on `quiet_polls` polls in a row (a request between its arrival and its
    first query is not seen by one poll). The window grows while the stack's processes use
    CPU or write their logs (tests/polling.py)."""
    quiet: list[dict] = []

    def settled() -> bool:
        state = _in_flight()
        if any(state.values()):
            quiet.clear()
            return False
        quiet.append(state)
        return len(quiet) >= quiet_polls

    eventually(
        settled,
        timeout=10,
        what="the stack's in-flight steps and webhooks to finish",
        progress=processes_progress(stack.alive()),
        interval=0.1,
    )


@pytest.fixture
def shop(stack, transactional_db) -> Shop:
    """An API client of the service, talking HTTP to the stack's web process."""
    _, key = make_api_client()
    return Shop(base_url=stack.web_url, api_key=key)
