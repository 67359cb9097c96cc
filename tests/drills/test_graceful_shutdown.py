"""Graceful shutdown (SPEC §7): SIGTERM drains in-flight requests and tasks.

- gunicorn: requests that reached the application when SIGTERM arrives get their complete
  response (no reset, no 5xx), then the server exits 0. To have requests *provably* in
  flight, the test holds the product's row lock so that every order request waits inside
  its transaction, sends SIGTERM, and only then lets them go.
- Celery: a worker SIGTERMed while relaying finishes its tasks (warm shutdown, exit 0),
  leaves no message parked as unacknowledged and no outbox row under a live lease; a new
  worker then delivers everything exactly once, in version order.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from urllib.parse import quote

import psycopg
import pytest
import redis
import requests
from django.db import connection
from django.utils import timezone

from orders.models import Order
from outbox.models import OutboxEvent, OutboxStatus
from tests.factories import make_api_client, make_product
from tests.outbox.helpers import (
    assert_delivered_exactly_once_in_order,
    enqueue,
    new_aggregate_ids,
)
from tests.polling import eventually, stays_false, threads_finished

pytestmark = pytest.mark.slow


def _test_db_dsn() -> str:
    db = connection.settings_dict
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    port = f":{db['PORT']}" if db["PORT"] else ""
    user = quote(db["USER"] or "", safe="")
    return f"postgres://{user}{password}@{db['HOST'] or '127.0.0.1'}{port}/{db['NAME']}"


def _waiting_on_locks(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()[0]


def _post_order(url: str, api_key: str, product_id, outcome: dict, index: int) -> None:
    """One order request; records (status, parsed body) or the exception's class name."""
    try:
        response = requests.post(
            f"{url}/api/v1/orders/",
            json={
                "email": f"drain-{index}@example.com",
                "items": [{"product_id": str(product_id), "quantity": 1}],
            },
            headers={"X-API-Key": api_key, "Idempotency-Key": f"drain-{uuid.uuid4()}"},
            timeout=60,
        )
        body = json.loads(response.content)  # the complete body, or this raises
        outcome[index] = (response.status_code, body)
    except Exception as exc:
        outcome[index] = (type(exc).__name__, str(exc)[:200])


@pytest.mark.parametrize("threads", [1, 4], ids=["sync-workers", "gthread-workers"])
def test_sigterm_to_gunicorn_completes_every_request_in_flight(services, threads):
    # given gunicorn with 2 workers, and as many order requests as it serves at once, all
    # of them inside the application, waiting for a row lock the test holds
    product = make_product(stock=1000)
    _, api_key = make_api_client()
    web = services.web(WEB_CONCURRENCY="2", WEB_THREADS=str(threads), WEB_GRACEFUL_TIMEOUT="20")
    in_flight = 2 * threads
    dsn = _test_db_dsn()
    outcome: dict[int, tuple] = {}
    with psycopg.connect(dsn) as locker:
        locker.execute("SELECT id FROM catalog_product WHERE id = %s FOR UPDATE", [product.id])
        clients = [
            threading.Thread(
                target=_post_order, args=(services.web_url, api_key, product.id, outcome, i)
            )
            for i in range(in_flight)
        ]
        for client in clients:
            client.start()
        # (gthread workers take connections unevenly: a busy one queues what it accepted
        # beyond its threads, so "all in the app" is not guaranteed; wait until it settles)
        seen: list[int] = []

        def settled() -> bool:
            seen.append(_waiting_on_locks(dsn))
            return seen[-1] >= in_flight or (seen[-1] > 0 and seen[-10:] == [seen[-1]] * 10)

        eventually(
            settled,
            timeout=30,
            what="requests waiting on the product's row lock",
            progress=lambda: seen[-1],
        )
        print(f"{seen[-1]} of {in_flight} requests waiting on the row lock at SIGTERM")

        # when gunicorn gets SIGTERM while they wait (and has handled it)
        web.mark_log()
        os.kill(web.pid, signal.SIGTERM)
        eventually(
            lambda: "Handling signal: term" in web.log_text(since_mark=True),
            timeout=30,
            what="gunicorn handling the SIGTERM",
            alive=[web],
        )
        # then it drains instead of exiting at once...
        stays_false(
            lambda: not web.is_running() or outcome,
            window=1.5,
            what=f"gunicorn exited or answered with requests held in flight ({outcome})",
        )
        locker.rollback()  # ...and once the requests can proceed

    eventually(
        threads_finished(clients),
        timeout=60,
        what="every client answered",
        progress=lambda: len(outcome),
    )
    # every one of them gets its complete 201
    statuses = sorted(str(status) for status, _ in outcome.values())
    assert statuses == ["201"] * in_flight, outcome
    created = {body["id"] for _, body in outcome.values()}
    assert {str(pk) for pk in Order.objects.values_list("pk", flat=True)} == created
    # and the server then exits cleanly (its graceful timeout is 20 s: past it, unfinished
    # workers are killed and the exit is not clean)
    eventually(lambda: not web.is_running(), timeout=30, what="gunicorn exiting")
    assert web.returncode == 0, web.log()


def test_sigterm_to_gunicorn_under_a_burst_drops_nothing_it_started(services):
    # given one sync worker (one request at a time) and a burst of 20 concurrent orders
    product = make_product(stock=1000)
    _, api_key = make_api_client()
    web = services.web(WEB_CONCURRENCY="1", WEB_THREADS="1", WEB_GRACEFUL_TIMEOUT="20")
    outcome: dict[int, tuple] = {}
    clients = [
        threading.Thread(
            target=_post_order, args=(services.web_url, api_key, product.id, outcome, i)
        )
        for i in range(20)
    ]
    for client in clients:
        client.start()
    # when SIGTERM arrives as soon as the first answer is out
    eventually(
        lambda: bool(outcome), timeout=30, what="a first answer", interval=0.005, alive=[web]
    )
    os.kill(web.pid, signal.SIGTERM)
    eventually(
        threads_finished(clients),
        timeout=60,
        what="every client answered or refused",
        progress=lambda: len(outcome),
    )
    eventually(lambda: not web.is_running(), timeout=30, what="gunicorn exiting")
    assert web.returncode == 0, web.log()

    # then no request got a 5xx or a truncated answer: each either got its complete answer
    # or was never taken up by the application (refused or reset before it was read)
    answered = {i: o for i, o in outcome.items() if isinstance(o[0], int)}
    dropped = {i: o for i, o in outcome.items() if not isinstance(o[0], int)}
    assert all(status == 201 for status, _ in answered.values()), answered
    assert {name for name, _ in dropped.values()} <= {"ConnectionError"}, dropped
    # and every order the server created was answered to its client
    created = {body["id"] for _, body in answered.values()}
    assert {str(pk) for pk in Order.objects.values_list("pk", flat=True)} == created
    print(f"burst of 20: {len(answered)} answered 201, {len(dropped)} never taken up")


def test_sigterm_to_the_celery_worker_loses_no_task(services, drill_redis):
    # given 1500 events, a worker relaying them 2 at a time for 1 s per task, 8 tasks queued
    rows = enqueue(aggregate_ids=new_aggregate_ids(50), versions=range(1, 31))
    env = {
        "OUTBOX_BATCH_SIZE": "2",
        "OUTBOX_RELAY_TIME_BUDGET": "1",
        "OUTBOX_LEASE_SECONDS": "60",  # a row left leased would stay stuck: visible below
        "OUTBOX_NUDGE_ON_COMMIT": "0",
    }
    client = redis.Redis.from_url(drill_redis.url, decode_responses=True)
    client.delete("unacked", "unacked_index")
    from orders_project.celery import app

    with app.connection_for_write(drill_redis.url) as conn:
        for _ in range(8):
            app.send_task(
                "outbox.tasks.relay_outbox", connection=conn, queue=services.queue, retry=False
            )
    worker = services.worker(**env)
    eventually(
        lambda: client.xlen(services.stream) > 0,
        timeout=60,
        interval=0.01,
        what="the worker relaying",
        alive=[worker],
    )

    # when it gets SIGTERM in the middle of the work
    os.kill(worker.pid, signal.SIGTERM)
    stopped_at = time.monotonic()
    # then it finishes what it runs and exits 0 (warm shutdown: each task stops at its 1 s
    # budget; waited for as long as it visibly works through that)
    eventually(
        lambda: not worker.is_running(),
        timeout=30,
        what="the worker's warm shutdown",
        progress=worker.progress,
    )
    assert worker.returncode == 0, worker.log()
    published = client.xlen(services.stream)
    assert 0 < published < len(rows), "the SIGTERM did not land in the middle of the work"
    print(
        f"worker drained in {time.monotonic() - stopped_at:.1f}s; {published}/{len(rows)} "
        f"published; {client.llen(services.queue)} task messages back in the queue"
    )
    # no message is parked as unacknowledged (it would wait out the visibility timeout)
    assert client.hlen("unacked") == 0, client.hgetall("unacked")
    # and no row is left under a live lease of the stopped worker
    leased = OutboxEvent.objects.filter(
        status=OutboxStatus.PENDING, lease_token__isnull=False, lease_expires_at__gt=timezone.now()
    ).count()
    assert leased == 0, f"{leased} rows still leased by the stopped worker"

    # when a new worker (and beat) take over
    replacement = services.worker(**env)
    services.beat(**env)
    eventually(
        lambda: not OutboxEvent.objects.filter(status=OutboxStatus.PENDING).exists(),
        timeout=90,
        what="every event published",
        alive=[replacement],
        progress=lambda: client.xlen(services.stream),
    )
    # then everything was delivered exactly once, in version order
    entries = [
        {"_entry_id": entry_id, **fields}
        for entry_id, fields in client.xrange(services.stream, "-", "+")
    ]
    assert_delivered_exactly_once_in_order(entries, rows)
    client.close()
