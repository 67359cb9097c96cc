"""scripts/servers.py: private PostgreSQL and Redis instances on free ports.

Other tests (fault drills, Redis outages) rely on these helpers to get servers they may stop
or kill; these tests never touch the shared servers on the default ports.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from scripts.servers import free_port, port_open, start_postgres, start_redis

pytestmark = pytest.mark.slow

SHARED_PORTS = {5432, 6379}


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    # Not tmp_path: as root, PostgreSQL runs as an unprivileged user, who cannot enter
    # pytest's mode-0700 temporary root.
    path = Path(tempfile.mkdtemp(prefix="orders-servers-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_private_redis_serves_and_stops(scratch_dir):
    # given a private Redis on a free port
    port = free_port()
    assert port not in SHARED_PORTS
    server = start_redis(scratch_dir / "redis", port)
    try:
        # when a client uses it
        client = redis.Redis.from_url(server.url, socket_timeout=2)
        client.set("probe", "value")
        # then it answers
        assert client.get("probe") == b"value"
        client.close()
    finally:
        server.stop()
    # and once stopped nothing listens there any more
    assert not port_open("127.0.0.1", port)
    assert not server.is_running()


def test_private_postgres_serves_and_stops(scratch_dir):
    # given a private PostgreSQL on a free port
    port = free_port()
    assert port not in SHARED_PORTS
    server = start_postgres(scratch_dir / "pg", port)
    try:
        # when a client connects and creates a database
        with psycopg.connect(server.url, autocommit=True) as conn:
            assert conn.info.port == port
            conn.execute("CREATE DATABASE probe")
        # then the new database is usable
        with psycopg.connect(server.url_for("probe")) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
    # and once stopped nothing listens there any more
    assert not port_open("127.0.0.1", port)
    assert not server.is_running()


def test_killed_postgres_restarts_with_its_committed_data(scratch_dir):
    # given a private PostgreSQL holding a committed row
    port = free_port()
    server = start_postgres(scratch_dir / "pg", port)
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE probe (value int)")
        conn.execute("INSERT INTO probe VALUES (42)")
    # when it crashes (SIGKILL) and is started again on the same data dir
    server.kill()
    assert not port_open("127.0.0.1", port)
    server = start_postgres(scratch_dir / "pg", port)
    try:
        # then crash recovery kept the row
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT value FROM probe").fetchall() == [(42,)]
    finally:
        server.stop()
    assert not port_open("127.0.0.1", port)


def test_killed_redis_frees_its_port(scratch_dir):
    # given a private Redis
    port = free_port()
    server = start_redis(scratch_dir / "redis", port)
    # when it is killed (an abrupt outage)
    server.kill()
    # then the port is closed and clients get connection errors
    assert not port_open("127.0.0.1", port)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url, socket_connect_timeout=1).ping()
