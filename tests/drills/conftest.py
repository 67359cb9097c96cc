"""Fixtures of the drills: the service's real processes (gunicorn, Celery worker and beat),
started from this repo's virtualenv with the real settings module, pointed by environment at
pytest's test database and at a Redis server private to this module, under names of their
own. Each runs in its own process group and is stopped by its pid (SIGTERM, then SIGKILL);
the tails of their logs are printed at teardown, which pytest shows when a test failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from django.db import connection

from scripts.servers import free_port, start_redis, wait_until

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
if not (BIN / "celery").exists():  # e.g. a CI image with the project installed system-wide
    BIN = Path(sys.executable).parent


@dataclass
class Service:
    """One process of the service in its own process group, logging to a file."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the group, SIGKILL whatever is left after `grace` seconds."""
        if self.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def log(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


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
        db = connection.settings_dict  # after django_db_setup: the test database
        user = quote(db["USER"] or "", safe="")
        password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
        port = f":{db['PORT']}" if db["PORT"] else ""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO")}
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
            CELERY_QUEUE=self.queue,
            REDBEAT_KEY_PREFIX=f"{self.names}:redbeat",
            CACHE_KEY_PREFIX=f"{self.names}:cache",
            RATE_LIMIT_KEY_PREFIX=f"{self.names}:rl",
            API_RATE_LIMIT="1000000/60s",
            ORDER_RATE_LIMIT="1000000/60s",
            LOG_LEVEL="WARNING",
            PROMETHEUS_MULTIPROC_DIR=str(self.root / "prometheus"),
        )
        env.update({key: str(value) for key, value in overrides.items()})
        return env

    def _start(self, name: str, argv: list[str], env: dict[str, str]) -> Service:
        (self.root / "prometheus").mkdir(exist_ok=True)
        log_path = self.root / f"{name}-{len(self.started)}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stop() reaches its children too
            )
        service = Service(name, popen, log_path)
        self.started.append(service)
        return service

    def web(self, **env: str) -> Service:
        service = self._start(
            "web",
            [str(BIN / "gunicorn"), "-c", str(REPO / "gunicorn.conf.py")],
            self.env(PORT=str(self.web_port), **env),
        )

        def answers() -> bool:
            assert service.is_running(), f"gunicorn died:\n{service.log()}"
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"{self.web_url}/healthz", timeout=1).status_code == 200
            return False

        wait_until(answers, timeout=60, what="gunicorn answering /healthz", interval=0.2)
        return service

    def worker(self, **env: str) -> Service:
        argv = [
            str(BIN / "celery"),
            "-A",
            "orders_project",
            "worker",
            "--concurrency=2",
            f"--hostname=drills-{uuid.uuid4().hex[:6]}@%h",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=INFO",
        ]
        return self._start("worker", argv, self.env(**env))

    def beat(self, **env: str) -> Service:
        argv = [
            str(BIN / "celery"),
            "-A",
            "orders_project",
            "beat",
            "--loglevel=WARNING",
            f"--pidfile={self.root / 'beat.pid'}",
            f"--schedule={self.root / 'beat-schedule'}",
        ]
        return self._start("beat", argv, self.env(**env))

    def stop_all(self) -> None:
        for service in self.started:
            if service.is_running():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(service.pid, signal.SIGTERM)
        for service in self.started:
            service.stop(grace=10)

    def print_logs(self) -> None:
        for service in self.started:
            print(f"----- {service.name} (pid {service.pid}, exit {service.popen.returncode})")
            print(service.log() or "(empty log)")


@pytest.fixture(scope="module")
def drill_redis(tmp_path_factory):
    """A redis-server of this module only: nobody else's Celery shares its broker keys."""
    server = start_redis(tmp_path_factory.mktemp("redis"), free_port())
    yield server
    server.stop()


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
