"""Fixtures of the outbox tests: private names per test, a private Redis for the tests that
run real Celery worker and beat processes, and a factory that starts those processes.

Worker and beat run as `.venv/bin/celery -A orders_project ...` subprocesses with the real
settings module, pointed by environment at pytest's test database and at this test's
stream, queue and redbeat prefix. They are stopped (SIGTERM, then SIGKILL) in teardown and
their logs are printed there, which pytest shows when the test failed.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from django.db import connection
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

import outbox.sink
from outbox.relay import breaker
from scripts.processes import (
    ManagedProcess,
    beat_command,
    database_url,
    service_env,
    worker_command,
)
from scripts.servers import free_port, start_redis
from tests.event_contract import stop_after_checking_streams
from tests.outbox.helpers import use_redis


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
    stop_after_checking_streams(server)


@pytest.fixture
def worker_redis(private_redis, settings):
    use_redis(settings, private_redis.url)
    return private_redis


class CeleryProcess(ManagedProcess):
    def log(self) -> str:
        return self.log_text()


class CeleryProcesses:
    """Starts `celery worker` / `celery beat` processes for one test."""

    def __init__(self, tmp_path: Path, settings) -> None:
        self.tmp_path = tmp_path
        self.settings = settings
        self.processes: list[CeleryProcess] = []
        self.metrics_dir = tmp_path / "prometheus"
        self.metrics_dir.mkdir()

    def env(self, **overrides: str) -> dict[str, str]:
        s = self.settings
        return service_env(
            database_url=database_url(connection.settings_dict),
            redis_url=s.REDIS_URL,
            metrics_dir=self.metrics_dir,
            **{
                "CELERY_BROKER_URL": s.CELERY_BROKER_URL,
                "EVENT_STREAM_REDIS_URL": s.EVENT_STREAM_REDIS_URL,
                "EVENT_STREAM": s.EVENT_STREAM,
                "CELERY_QUEUE": s.CELERY_TASK_DEFAULT_QUEUE,
                "REDBEAT_KEY_PREFIX": s.CELERY_REDBEAT_KEY_PREFIX,
                "OUTBOX_LEASE_SECONDS": s.OUTBOX_LEASE_SECONDS,
                "OUTBOX_RELAY_INTERVAL": "1",
                "OUTBOX_NUDGE_ON_COMMIT": "0",
                **overrides,
            },
        )

    def _start(self, name: str, argv: list[str], env: dict) -> CeleryProcess:
        log_path = self.tmp_path / f"{name}.log"
        # cwd: beat's pid/schedule files land here, not in the repo
        process = CeleryProcess(name, argv, self.env(**env), log_path, self.tmp_path).start()
        self.processes.append(process)
        return process

    def worker(self, name: str = "worker", **env: str) -> CeleryProcess:
        """A solo-pool worker: one process, so SIGKILL/SIGSTOP hit the one doing the work."""
        argv = worker_command(hostname=f"{name}-{uuid.uuid4().hex[:6]}@%h", pool="solo")
        return self._start(name, argv, env)

    def beat(self, name: str = "beat", **env: str) -> CeleryProcess:
        return self._start(name, beat_command(pidfile=self.tmp_path / (name + ".pid")), env)

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
            process.terminate()
        deadline = time.monotonic() + 8  # for all of them together
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            process.stop(timeout=0)

    def print_logs(self) -> None:
        for process in self.processes:
            tail = process.log_tail(80)
            print(f"----- {process.name} (pid {process.pid}, exit {process.returncode})")
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
