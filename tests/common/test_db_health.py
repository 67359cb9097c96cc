"""The connection health check costs no round trip and still catches a dead connection
(core/db_engine: `is_usable` polls the idle socket instead of sending `SELECT 1`).

The backend is ended with pg_terminate_backend, which is what a server shutdown or
restart does to every connection (FATAL 57P01, then the socket closes); the shared server
itself keeps running.
"""

from __future__ import annotations

import os
import tempfile
import uuid

import psycopg
import pytest
import requests
from django.conf import settings
from django.db import connection

from scripts.processes import database_url, service_env, start_process, web_command
from scripts.servers import free_port
from tests.polling import eventually

pytestmark = pytest.mark.django_db(transaction=True)


def _terminate_backend_of_this_connection() -> None:
    pid = connection.connection.info.backend_pid
    with psycopg.connect(database_url(connection.settings_dict), autocommit=True) as other:
        assert other.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)


def _trace_sends_nothing(check) -> bool:
    """Run `check()` with the connection's protocol traced: True if nothing was sent."""
    with tempfile.TemporaryFile() as trace:
        connection.connection.pgconn.trace(trace.fileno())
        try:
            check()
        finally:
            connection.connection.pgconn.untrace()
        return os.fstat(trace.fileno()).st_size == 0


def test_a_healthy_idle_connection_is_usable_without_a_round_trip():
    connection.ensure_connection()
    results = []
    assert _trace_sends_nothing(lambda: results.append(connection.is_usable()))
    assert results == [True]


def test_a_connection_whose_backend_was_terminated_is_found_unusable():
    # given a connection in use
    connection.ensure_connection()
    assert connection.is_usable()
    # when the server ends its backend
    _terminate_backend_of_this_connection()
    # then the health check notices (the server's message arrives a moment later)
    try:
        eventually(
            lambda: not connection.is_usable(),
            timeout=10,
            what="the terminated connection unusable",
        )
    finally:
        connection.close()  # the test's teardown needs a live connection


def test_gunicorn_serves_the_request_after_its_connection_died(tmp_path):
    # given a real gunicorn (one sync worker, persistent connections, as in production)
    # whose connection to the test database is open and idle
    port = free_port()
    env = service_env(
        database_url=database_url(connection.settings_dict),
        redis_url=settings.REDIS_URL,
        names=f"dbhealth-{uuid.uuid4().hex[:8]}",
        PORT=port,
        WEB_CONCURRENCY=1,
        WEB_THREADS=1,
        DB_CONN_MAX_AGE=600,
    )
    web = start_process("web", web_command(), env, tmp_path / "web.log", die_with_parent=True)
    try:
        readyz = f"http://127.0.0.1:{port}/readyz"
        web.wait_http_ok(readyz, timeout=60, what="gunicorn ready")
        # when the server ends every other backend of this database (gunicorn's among them)
        ended = _terminate_other_backends()
        assert ended >= 1
        # then its next request, whose first query runs the health check, is served on a
        # new connection: /readyz says the database is fine
        answer = requests.get(readyz, timeout=30)
        assert answer.status_code == 200, answer.text
    finally:
        web.stop()
        print(web.log_tail(30))


def _terminate_other_backends() -> int:
    """End every other backend of this database and wait until they are gone (their
    sockets then hold the server's goodbye); returns how many there were."""
    connection.ensure_connection()
    with psycopg.connect(database_url(connection.settings_dict), autocommit=True) as other:
        pids = [
            pid
            for (pid,) in other.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND pid <> %s",
                [connection.connection.info.backend_pid],
            ).fetchall()
        ]
        for pid in pids:
            other.execute("SELECT pg_terminate_backend(%s)", [pid])

        def gone() -> bool:
            rows = other.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]
            ).fetchone()
            return rows is not None and rows[0] == 0

        eventually(gone, timeout=10, what="the terminated backends gone")
    return len(pids)
