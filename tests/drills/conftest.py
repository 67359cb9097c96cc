"""Fixtures of the drills: the service's real processes (gunicorn, Celery worker and beat),
started from this repo's virtualenv with the real settings module, pointed by environment at
pytest's test database and at a Redis server private to this module, under names of their
own. Each runs in its own process group and is stopped by its pid (SIGTERM, then SIGKILL);
the tails of their logs are printed at teardown, which pytest shows when a test failed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.db import connection

from scripts.processes import (
    ManagedProcess,
    beat_command,
    database_url,
    service_env,
    stop_all,
    web_command,
    worker_command,
)
from scripts.servers import free_port, start_redis
from tests.event_contract import stop_after_checking_streams


class Service(ManagedProcess):
    """One process of the service in its own process group, logging to a file."""

    def log(self, lines: int = 60) -> str:
        return self.log_tail(lines)


@dataclass
class Services:
    root: Path
    redis_url: str
    names: str = field(default_factory=lambda: f"drills-{uuid.uuid4().hex[:8]}")
    web_port: int = field(default_factory=free_port)
    started: list[Service] = field(default_factory=list)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def stream(self) -> str:
        return f"{self.names}:events"

    @property
    def queue(self) -> str:
        return f"{self.names}:celery"

    def env(self, **overrides: str) -> dict[str, str]:
        return service_env(
            database_url=database_url(connection.settings_dict),  # after django_db_setup
            redis_url=self.redis_url,
            names=self.names,
            metrics_dir=self.root / "prometheus",
            drop_prefixes=("DJANGO",),
            **{
                "DEBUG": "0",
                "API_RATE_LIMIT": "1000000/60s",
                "ORDER_RATE_LIMIT": "1000000/60s",
                **overrides,
            },
        )

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> Service:
        (self.root / "prometheus").mkdir(exist_ok=True)
        log_path = self.root / f"{name}-{len(self.started)}.log"
        service = Service(name, argv, env, log_path).start()
        self.started.append(service)
        return service

    def web(self, **env: str) -> Service:
        service = self._start("web", web_command(), self.env(PORT=str(self.web_port), **env))
        service.wait_http_ok(
            f"{self.web_url}/healthz", timeout=60, what="gunicorn answering /healthz"
        )
        return service

    def worker(self, **env: str) -> Service:
        argv = worker_command(
            hostname=f"drills-{uuid.uuid4().hex[:6]}@%h", concurrency=2, loglevel="INFO"
        )
        return self._start("worker", argv, self.env(**env))

    def beat(self, **env: str) -> Service:
        argv = beat_command(pidfile=self.root / "beat.pid", schedule=self.root / "beat-schedule")
        return self._start("beat", argv, self.env(**env))

    def stop_all(self) -> None:
        stop_all(self.started, timeout=10)

    def print_logs(self) -> None:
        for service in self.started:
            print(f"----- {service.name} (pid {service.pid}, exit {service.returncode})")
            print(service.log() or "(empty log)")


@pytest.fixture(scope="module")
def drill_redis(tmp_path_factory):
    """A redis-server of this module only: nobody else's Celery shares its broker keys."""
    server = start_redis(tmp_path_factory.mktemp("redis"), free_port())
    yield server
    stop_after_checking_streams(server)


@pytest.fixture
def services(transactional_db, drill_redis, tmp_path):
    """Factory of service processes; the test database is flushed only after they stop
    (this fixture depends on transactional_db, so it is torn down first)."""
    started = Services(tmp_path, drill_redis.url)
    try:
        yield started
    finally:
        started.stop_all()
        started.print_logs()
