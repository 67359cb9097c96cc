"""A key revoked or rotated by another process is refused promptly by a real gunicorn whose
workers answer it from their per-process caches (clients/key_cache.py; the bound is 1 s).

Each test first proves that the workers serve the key from memory: with the row's hash
changed behind the caches' back (no invalidation published), the key still gets 200,
which the database alone would refuse. Only then does another process revoke or rotate it
through the real paths, and the test polls for the 401, printing how long it took. The
deadline of the poll is generous (scaled by the machine's slowness): what proves the
promptness is the measured delay, printed, not a timed assertion.
"""

from __future__ import annotations

import http.client
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.db import connection

from clients.keys import api_key_hash
from clients.models import ApiClient
from clients.services import api_client_rotate_key
from scripts.processes import (
    PYTHON,
    REPO,
    database_url,
    service_env,
    start_process,
    web_command,
)
from scripts.servers import free_port
from scripts.waiting import wait_for
from tests.factories import make_api_client
from tests.payments.helpers import WEBHOOK_SECRET

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def web(tmp_path) -> Iterator[tuple[int, dict[str, str]]]:
    """gunicorn (2 sync workers, as `make run`) on a free port: (port, its environment)."""
    port = free_port()
    env = service_env(
        database_url=database_url(connection.settings_dict),  # pytest's test database
        redis_url=settings.REDIS_URL,
        names=f"keycache-{uuid.uuid4().hex[:8]}",
        DEBUG="0",
        PORT=str(port),
        WEB_CONCURRENCY="2",
        WEB_THREADS="1",
        PAYMENT_WEBHOOK_SECRETS=WEBHOOK_SECRET,
        API_RATE_LIMIT="1000000/60s",
        # the proof of caching sends the key while the database does not know it
        API_KEY_FAILURE_RATE_LIMIT="1000000/60s",
        PAYMENT_NUDGE_ON_COMMIT="0",
        OUTBOX_NUDGE_ON_COMMIT="0",
        # the invalidation channel follows the cache prefix: this process's, so that a
        # revoke run here (in a thread) reaches the workers as one from anywhere would
        CACHE_KEY_PREFIX=settings.CACHES["default"]["KEY_PREFIX"],
    )
    process = start_process("web", web_command(), env, tmp_path / "web.log", cwd=REPO)
    try:
        process.wait_http_ok(f"http://127.0.0.1:{port}/healthz", timeout=60, what="gunicorn up")
        yield port, env
    finally:
        process.stop()
        print(process.log_tail(40))  # shown when the test failed


def status(port: int, key: str) -> int:
    """GET /api/v1/orders/ with `key`, on a new connection (any worker may take it)."""
    exchange = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        exchange.request("GET", "/api/v1/orders/", headers={"X-API-Key": key})
        response = exchange.getresponse()
        response.read()
        return response.status
    finally:
        exchange.close()


def answered_from_memory(port: int, client: ApiClient, key: str) -> bool:
    """Whether the workers answer `key` without the database: with the row's hash changed
    behind the caches' back (an UPDATE that publishes nothing), 10 requests in a row still
    get 200. The hash is put back either way; a worker that had not cached the key yet
    (401 meanwhile) caches it on a later call."""
    for _ in range(10):
        assert status(port, key) == 200
    ApiClient.objects.filter(pk=client.pk).update(key_hash=uuid.uuid4().hex * 2)
    try:
        return all(status(port, key) == 200 for _ in range(10))
    finally:
        ApiClient.objects.filter(pk=client.pk).update(key_hash=api_key_hash(key))


def prove_cached(port: int, client: ApiClient, key: str) -> None:
    wait_for(
        lambda: answered_from_memory(port, client, key),
        what="the workers answer the key from their caches",
        timeout=10,
        interval=0.2,
    )


@dataclass
class Refusal:
    accepted: int  # requests answered 200 after the write returned
    sent: float  # when the first refused request was sent (time.monotonic())
    answered: float  # and when its 401 came back

    def describe(self, since: float) -> str:
        return (
            f"{self.accepted} request(s) still accepted, the first refused one sent "
            f"{1000 * (self.sent - since):.1f} ms and answered {1000 * (self.answered - since):.1f}"
            " ms after"
        )


def first_refusal(port: int, key: str) -> Refusal:
    """Poll with `key` until it is refused (401); what happened on the way."""
    accepted = 0

    def refused() -> Refusal | None:
        nonlocal accepted
        sent = time.monotonic()
        answer = status(port, key)
        if answer == 401:
            return Refusal(accepted, sent, time.monotonic())
        assert answer == 200, answer
        accepted += 1
        return None

    return wait_for(refused, what="the key refused", timeout=5, interval=0.005)


def test_a_key_revoked_by_another_process_is_refused_at_once(web):
    # given a key the workers answer from their caches
    port, env = web
    client, key = make_api_client("live-revoke")
    prove_cached(port, client, key)

    # when staff revoke it with `manage.py revoke_api_client` (another process)
    started = time.monotonic()
    subprocess.run(
        [str(PYTHON), str(REPO / "manage.py"), "revoke_api_client", client.name],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    exited = time.monotonic()

    # then the service refuses it, promptly, on every worker
    refusal = first_refusal(port, key)
    print(
        f"revoked by manage.py (ran {1000 * (exited - started):.0f} ms): "
        f"{refusal.describe(since=exited)} it exited"
    )
    assert [status(port, key) for _ in range(20)] == [401] * 20


def test_a_key_rotated_in_another_thread_is_refused_and_the_new_one_works(web):
    # given a key the workers answer from their caches
    port, _env = web
    client, old_key = make_api_client("live-rotate")
    prove_cached(port, client, old_key)

    # when the rotation service runs in another thread, with its own database connection
    new_keys: list[tuple[str, float]] = []

    def rotate() -> None:
        try:
            new_keys.append((api_client_rotate_key(client_id=client.pk), time.monotonic()))
        finally:
            connection.close()

    rotating = threading.Thread(target=rotate)
    rotating.start()
    rotating.join(60)
    [(new_key, committed)] = new_keys  # the service returns after its commit and publish

    # then the old key is refused promptly on every worker, and the new one works
    refusal = first_refusal(port, old_key)
    print(f"rotated in a thread: {refusal.describe(since=committed)} the commit and publish")
    assert [status(port, old_key) for _ in range(20)] == [401] * 20
    assert [status(port, new_key) for _ in range(5)] == [200] * 5
