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

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from django.db import connection

from scripts.servers import free_port, start_redis, wait_until
from tests.factories import make_api_client
from tests.payments.helpers import WEBHOOK_SECRET, Shop

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
if not (BIN / "celery").exists():  # e.g. a CI image with the project installed system-wide
    BIN = Path(sys.executable).parent
PYTHON = BIN / "python" if (BIN / "python").exists() else Path(sys.executable)


@dataclass
class Process:
    """One subprocess in its own process group, logging to a file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    popen: subprocess.Popen | None = None
    log_mark: int = 0

    def start(self) -> Process:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stop() reaches its children too
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def terminate(self) -> None:
        if self.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the group (graceful), SIGKILL whatever is left after `grace` seconds."""
        if self.popen is None:
            return
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the group: a crash, nothing saved on the way out."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def mark_log(self) -> None:
        with contextlib.suppress(OSError):
            self.log_mark = self.log_path.stat().st_size

    def log_since_mark(self, max_lines: int = 60) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_mark)
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-max_lines:])


@dataclass
class Stack:
    """Web, worker and beat of one test module, and the names/ports they were given."""

    root: Path
    redis_url: str
    extra_env: dict[str, str]
    web_port: int = field(default_factory=free_port)
    provider_port: int = field(default_factory=free_port)
    names: str = field(default_factory=lambda: f"payments-{uuid.uuid4().hex[:8]}")
    processes: dict[str, Process] = field(default_factory=dict)

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

    def env(self) -> dict[str, str]:
        db = connection.settings_dict  # after django_db_setup: the test database
        user = quote(db["USER"] or "", safe="")
        password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
        port = f":{db['PORT']}" if db["PORT"] else ""
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="orders_project.settings",
            PYTHONPATH=str(REPO),
            PYTHONUNBUFFERED="1",
            SECRET_KEY="test-secret-key-not-for-production",
            DEBUG="0",
            DATABASE_URL=(
                f"postgres://{user}{password}@{db['HOST'] or '127.0.0.1'}{port}/{quote(db['NAME'])}"
            ),
            REDIS_URL=self.redis_url,
            CELERY_BROKER_URL=self.redis_url,
            EVENT_STREAM_REDIS_URL=self.redis_url,
            EVENT_STREAM=self.stream,
            CELERY_QUEUE=f"{self.names}:celery",
            REDBEAT_KEY_PREFIX=f"{self.names}:redbeat",
            CACHE_KEY_PREFIX=f"{self.names}:cache",
            RATE_LIMIT_KEY_PREFIX=f"{self.names}:rl",
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
            LOG_LEVEL="WARNING",
            PROMETHEUS_MULTIPROC_DIR=str(self.root / "prometheus"),
        )
        env.update(self.extra_env)
        return env

    def _process(self, name: str, argv: list[str]) -> Process:
        process = Process(name, argv, self.env(), self.root, self.root / f"{name}.log")
        self.processes[name] = process
        return process

    def start_web(self) -> Process:
        env_port = {"PORT": str(self.web_port), "WEB_CONCURRENCY": "2", "WEB_THREADS": "4"}
        process = self._process(
            "web", [str(BIN / "gunicorn"), "-c", str(REPO / "gunicorn.conf.py")]
        )
        process.env.update(env_port)
        process.cwd = REPO
        process.start()
        wait_until(
            lambda: _answers(f"{self.web_url}/healthz") or _dead(process),
            timeout=60,
            what="gunicorn answering /healthz",
            interval=0.2,
        )
        assert process.is_running(), f"gunicorn died:\n{process.log_since_mark()}"
        return process

    def start_worker(self) -> Process:
        return self._process(
            "worker",
            [
                str(BIN / "celery"),
                "-A",
                "orders_project",
                "worker",
                "--concurrency=2",
                f"--hostname=payments-{uuid.uuid4().hex[:6]}@%h",
                "--without-mingle",
                "--without-gossip",
                "--loglevel=WARNING",
            ],
        ).start()

    def start_beat(self) -> Process:
        return self._process(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "orders_project",
                "beat",
                "--loglevel=WARNING",
                f"--pidfile={self.root / 'beat.pid'}",
                f"--schedule={self.root / 'beat-schedule'}",
            ],
        ).start()

    def restart_web(self) -> Process:
        self.processes["web"].stop()
        return self.start_web()

    def alive(self) -> list[Process]:
        return list(self.processes.values())

    def stop(self) -> None:
        # All at once: each drains its in-flight work in parallel with the others.
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            process.stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _dead(process: Process) -> bool:
    return not process.is_running()


@pytest.fixture(scope="session")
def payments_redis():
    """A redis-server of this test session only (broker, stream, cache of the processes)."""
    data_dir = Path(tempfile.mkdtemp(prefix="payments-redis-"))
    server = start_redis(data_dir, free_port())
    yield server
    server.stop()


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
        self.process: Process | None = None
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
        argv = [
            str(PYTHON),
            str(REPO / "manage.py"),
            "run_fake_provider",
            f"--port={self.stack.provider_port}",
            f"--webhook-url={self.stack.webhook_url}",
            f"--webhook-secret={WEBHOOK_SECRET}",
            f"--webhook-delay={webhook_delay}",
            f"--state-file={self.state_file}",
            f"--error-rate={error_rate}",
            f"--latency={latency}",
            f"--duplicate-rate={duplicate_rate}",
            f"--out-of-order={out_of_order}",
        ]
        self.process = Process(
            "provider",
            argv,
            self.stack.env(),
            REPO,
            self.root / "provider.log",
        ).start()
        wait_until(
            lambda: _answers(f"{self.url}/healthz") or _dead(self.process),
            timeout=30,
            what="fake provider answering /healthz",
            interval=0.1,
        )
        assert self.process.is_running(), f"provider died:\n{self.process.log_since_mark()}"
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def kill(self) -> None:
        if self.process:
            self.process.kill()

    def chaos(self, **switches: float) -> dict:
        response = requests.post(f"{self.url}/_chaos", json=switches, timeout=5)
        response.raise_for_status()
        return response.json()

    def payments(self, order_id=None) -> list[dict]:
        query = f"?order_id={order_id}" if order_id else ""
        response = requests.get(f"{self.url}/v1/payments{query}", timeout=5)
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
            state = "running" if process.is_running() else f"exited {process.popen.returncode}"
            print(f"----- {process.name} (pid {process.pid}, {state})")
            print(process.log_since_mark() or "(nothing logged)")
        # Let a step or webhook of this test that is still in flight finish before the flush.
        time.sleep(0.5)


@pytest.fixture
def shop(stack, transactional_db) -> Shop:
    """An API client of the service, talking HTTP to the stack's web process."""
    _, key = make_api_client()
    return Shop(base_url=stack.web_url, api_key=key)
