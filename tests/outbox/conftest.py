"""Fixtures of the outbox tests: private names per test, a private Redis for the tests that
run real Celery worker and beat processes, and a factory that starts those processes.

Worker and beat run as `.venv/bin/celery -A orders_project ...` subprocesses with the real
settings module, pointed by environment at pytest's test database and at this test's
stream, queue and redbeat prefix. They are stopped (SIGTERM, then SIGKILL) in teardown and
their logs are printed there, which pytest shows when the test failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

import outbox.sink
from outbox.relay import breaker
from scripts.servers import free_port, start_redis
from tests.outbox.helpers import use_redis

REPO = Path(__file__).resolve().parents[2]
CELERY = REPO / ".venv" / "bin" / "celery"
if not CELERY.exists():  # e.g. a CI image with the project installed system-wide
    CELERY = Path(sys.executable).with_name("celery")


@pytest.fixture(autouse=True)
def outbox_names(settings):
    """A stream, queue and redbeat prefix of this test's own (inside this run's names), and a
    sink client and breaker that remember nothing from an earlier test."""
    suffix = uuid.uuid4().hex[:8]
    settings.EVENT_STREAM = f"{settings.EVENT_STREAM}:{suffix}"
    settings.CELERY_TASK_DEFAULT_QUEUE = f"{settings.CELERY_TASK_DEFAULT_QUEUE}:{suffix}"
    settings.CELERY_REDBEAT_KEY_PREFIX = f"{settings.CELERY_REDBEAT_KEY_PREFIX}:{suffix}"
    outbox.sink._client.cache_clear()
    breaker.reset()
    yield settings
    outbox.sink._client.cache_clear()
    breaker.reset()


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory):
    """A redis-server of this test session only, for worker/beat processes: tasks left
    unacknowledged by a killed worker never reach the shared Redis."""
    server = start_redis(tmp_path_factory.mktemp("redis"), free_port())
    yield server
    server.stop()


@pytest.fixture
def worker_redis(private_redis, settings):
    use_redis(settings, private_redis.url)
    return private_redis


@dataclass
class CeleryProcess:
    name: str
    popen: subprocess.Popen
    log_path: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, no cleanup of any kind."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def pause(self) -> None:
        os.killpg(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.pid, signal.SIGCONT)

    def stop(self, grace: float = 8.0) -> None:
        """SIGTERM (warm shutdown), SIGKILL if it is not gone within `grace` seconds."""
        if self.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGCONT)  # a paused process cannot handle SIGTERM
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        # Whatever is left of the group (prefork children, a hung shutdown) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


class CeleryProcesses:
    """Starts `celery worker` / `celery beat` processes for one test."""

    def __init__(self, tmp_path: Path, settings) -> None:
        self.tmp_path = tmp_path
        self.settings = settings
        self.processes: list[CeleryProcess] = []
        self.metrics_dir = tmp_path / "prometheus"
        self.metrics_dir.mkdir()

    def env(self, **overrides: str) -> dict[str, str]:
        db = connection.settings_dict
        user = quote(db["USER"] or "", safe="")
        password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
        host = db["HOST"] or "127.0.0.1"
        port = f":{db['PORT']}" if db["PORT"] else ""
        s = self.settings
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="orders_project.settings",
            PYTHONPATH=str(REPO),
            PYTHONUNBUFFERED="1",
            SECRET_KEY="test-secret-key-not-for-production",
            DATABASE_URL=f"postgres://{user}{password}@{host}{port}/{quote(db['NAME'])}",
            REDIS_URL=s.REDIS_URL,
            CELERY_BROKER_URL=s.CELERY_BROKER_URL,
            EVENT_STREAM_REDIS_URL=s.EVENT_STREAM_REDIS_URL,
            EVENT_STREAM=s.EVENT_STREAM,
            CELERY_QUEUE=s.CELERY_TASK_DEFAULT_QUEUE,
            REDBEAT_KEY_PREFIX=s.CELERY_REDBEAT_KEY_PREFIX,
            OUTBOX_LEASE_SECONDS=str(s.OUTBOX_LEASE_SECONDS),
            OUTBOX_RELAY_INTERVAL="1",
            OUTBOX_NUDGE_ON_COMMIT="0",
            LOG_LEVEL="WARNING",
            PROMETHEUS_MULTIPROC_DIR=str(self.metrics_dir),
        )
        env.update({key: str(value) for key, value in overrides.items()})
        return env

    def _start(self, kind: str, name: str, argv: list[str], env: dict) -> CeleryProcess:
        log_path = self.tmp_path / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [str(CELERY), "-A", "orders_project", kind, *argv],
                cwd=self.tmp_path,  # beat's pid/schedule files land here, not in the repo
                env=self.env(**env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop/kill reach all of it
            )
        process = CeleryProcess(name, popen, log_path, argv)
        self.processes.append(process)
        return process

    def worker(self, name: str = "worker", **env: str) -> CeleryProcess:
        """A solo-pool worker: one process, so SIGKILL/SIGSTOP hit the one doing the work."""
        argv = [
            "--pool=solo",
            f"--hostname={name}-{uuid.uuid4().hex[:6]}@%h",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=WARNING",
        ]
        return self._start("worker", name, argv, env)

    def beat(self, name: str = "beat", **env: str) -> CeleryProcess:
        argv = ["--loglevel=WARNING", f"--pidfile={self.tmp_path / (name + '.pid')}"]
        return self._start("beat", name, argv, env)

    def metric(self, name: str) -> float:
        """Sum of a counter over every process that ran (PROMETHEUS_MULTIPROC_DIR)."""
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.metrics_dir))
        return sum(
            sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.name == name
        )

    def metric_by_process(self, name: str) -> dict[str, float]:
        """A counter per process file (counter_<pid>.db), to see who did the work."""
        values = {}
        for path in sorted(self.metrics_dir.glob("counter_*.db")):
            values[path.stem] = sum(
                sample.value
                for family in MultiProcessCollector.merge([str(path)], accumulate=True)
                for sample in family.samples
                if sample.name == name
            )
        return values

    def kick_relay(self, count: int = 1) -> None:
        """Queue `count` relay tasks now (besides beat's), so several workers relay at once."""
        from orders_project.celery import app
        from outbox.tasks import relay_outbox

        with app.connection_for_write(self.settings.CELERY_BROKER_URL) as conn:
            for _ in range(count):
                relay_outbox.apply_async(
                    connection=conn, queue=self.settings.CELERY_TASK_DEFAULT_QUEUE, retry=False
                )

    def stop_all(self) -> None:
        for process in self.processes:
            if process.is_running():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGCONT)
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 8
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            process.stop(grace=0)

    def print_logs(self) -> None:
        for process in self.processes:
            text = process.log()
            tail = "\n".join(text.splitlines()[-80:])
            print(f"----- {process.name} (pid {process.pid}, exit {process.popen.returncode})")
            print(tail or "(empty log)")


@pytest.fixture
def celery_processes(transactional_db, outbox_names, tmp_path):
    """Factory of worker/beat processes; the test database is flushed only after they stop
    (this fixture depends on transactional_db, so it is torn down first)."""
    processes = CeleryProcesses(tmp_path, outbox_names)
    try:
        yield processes
    finally:
        processes.stop_all()
        processes.print_logs()
