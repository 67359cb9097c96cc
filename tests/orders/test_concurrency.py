"""Concurrency of order creation and cancellation (SPEC §2 invariant, §3).

Real threads, each with its own HTTP client and its own PostgreSQL connection, started
together (tests/orders/helpers.run_in_threads). The database is not wrapped
in a test transaction here (transaction=True), so every thread sees committed rows only.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from catalog.models import Product
from orders.errors import OrderNotCancellable
from orders.idempotency import request_fingerprint
from orders.models import IdempotencyRecord, IdempotencyStatus, Order, OrderStatus
from orders.services import InvalidTransition, order_mark_paid
from outbox.models import OutboxEvent
from tests.factories import make_product
from tests.orders.helpers import (
    api_for,
    cancel_url,
    new_api,
    order_body,
    post_order,
    run_in_threads,
    sold_units,
    unique_key,
    wait_until,
)

WORKERS = 32  # PostgreSQL allows 100 connections and other suites share it

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.usefixtures("no_rate_limits"),
]


@pytest.fixture
def no_rate_limits():
    with override_settings(ORDER_RATE_LIMIT="100000/60s", API_RATE_LIMIT="100000/60s"):
        yield


def _deadlocks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def _other_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def _status_counts(responses) -> Counter:
    return Counter(response.status_code for response in responses)


def test_hundreds_of_buyers_for_one_product_never_oversell():
    # given a product with 25 units and 120 buyers of one unit each
    stock = 25
    product = make_product(stock=stock)
    _, key, _ = new_api()
    bodies = [order_body([(product, 1)]) for _ in range(120)]
    tasks = [lambda http, body=body: post_order(http, body) for body in bodies]

    # when they all order at once
    responses = run_in_threads(tasks, workers=WORKERS, make_http=lambda: api_for(key))

    # then exactly 25 units are sold and everyone else hears "insufficient stock"
    statuses = _status_counts(responses)
    assert statuses == {201: stock, 409: 120 - stock}, statuses
    for response in responses:
        if response.status_code == 409:
            problem = response.json()
            assert problem["code"] == "insufficient_stock"
            assert problem["products"][0]["product_id"] == str(product.pk)
    assert Product.objects.get(pk=product.pk).stock == 0
    assert sold_units(product) == stock
    assert Order.objects.count() == stock
    assert OutboxEvent.objects.filter(type="order.created").count() == stock


def test_multi_line_orders_over_overlapping_products_never_deadlock_or_oversell():
    # given six products and a few pending orders to cancel during the rush
    rng = random.Random(20240611)
    products = [make_product(stock=rng.randint(30, 60)) for _ in range(6)]
    initial = {product.pk: product.stock for product in products}
    _, key, http = new_api()
    to_cancel = []
    for _ in range(12):
        lines = [(product, rng.randint(1, 3)) for product in rng.sample(products, 2)]
        response = post_order(http, order_body(lines))
        assert response.status_code == 201, response.content
        to_cancel.append(response.json()["id"])

    # and 80 orders of 2-4 lines, lines in random order, random quantities
    def order_task(lines):
        return lambda http: post_order(http, order_body(lines))

    tasks = [
        order_task([(p, rng.randint(1, 6)) for p in rng.sample(products, rng.randint(2, 4))])
        for _ in range(80)
    ]
    tasks += [
        lambda http, order_id=order_id: http.post(cancel_url(order_id)) for order_id in to_cancel
    ]
    rng.shuffle(tasks)
    deadlocks_before = _deadlocks()

    # when they all run at once
    responses = run_in_threads(tasks, workers=WORKERS, make_http=lambda: api_for(key))

    # then no request failed with a server error (a deadlock would be a 500)
    statuses = _status_counts(responses)
    assert set(statuses) <= {200, 201, 409}, statuses
    assert statuses[200] == len(to_cancel)
    assert statuses[201] > 0
    for response in responses:
        if response.status_code == 409:
            assert response.json()["code"] == "insufficient_stock"
    # and PostgreSQL detected no deadlock (stats are flushed when the threads' backends exit)
    wait_until(
        lambda: _other_backends() == 0,
        timeout=10,
        what="the threads' database sessions to end",
        progress=_other_backends,
    )
    assert _deadlocks() == deadlocks_before
    # and for every product: stock = initial - units held by orders that are not cancelled
    for product in products:
        product.refresh_from_db()
        assert product.stock == initial[product.pk] - sold_units(product), product
        assert product.stock >= 0
    assert Order.objects.filter(pk__in=to_cancel, status=OrderStatus.CANCELLED).count() == 12
    assert OutboxEvent.objects.filter(type="order.cancelled").count() == 12


def test_concurrent_identical_requests_create_exactly_one_order():
    # given 32 copies of one request with one key
    product = make_product(stock=10)
    _, key, _ = new_api()
    body = order_body([(product, 3)])
    idempotency_key = unique_key()
    tasks = [lambda http: post_order(http, body, key=idempotency_key)] * WORKERS

    # when they arrive at once
    responses = run_in_threads(tasks, workers=WORKERS, make_http=lambda: api_for(key))

    # then exactly one created the order
    firsts = [r for r in responses if r.status_code == 201 and r["Idempotent-Replayed"] == "false"]
    assert len(firsts) == 1
    first = firsts[0]
    # and every other one is a byte-identical replay or "in use, retry later"
    for response in responses:
        if response is first:
            continue
        if response.status_code == 201:
            assert response["Idempotent-Replayed"] == "true"
            assert response.content == first.content
            assert response["Location"] == first["Location"]
        else:
            assert response.status_code == 409, response.content
            assert response.json()["code"] == "idempotency_key_in_use"
            assert int(response["Retry-After"]) >= 1
    # and there is one order, one reservation, one event
    assert Order.objects.count() == 1
    assert Product.objects.get(pk=product.pk).stock == 7
    assert OutboxEvent.objects.filter(type="order.created").count() == 1
    assert IdempotencyRecord.objects.count() == 1


def test_cancel_racing_cancel_restores_stock_once():
    # given a pending order of 4 units
    product = make_product(stock=10)
    _, key, http = new_api()
    order_id = post_order(http, order_body([(product, 4)])).json()["id"]

    # when eight cancels race
    tasks = [lambda http: http.post(cancel_url(order_id))] * 8
    responses = run_in_threads(tasks, workers=8, make_http=lambda: api_for(key))

    # then all see a cancelled order, but only one transition happened
    assert _status_counts(responses) == {200: 8}
    assert all(r.json()["status"] == "cancelled" for r in responses)
    assert Product.objects.get(pk=product.pk).stock == 10
    events = OutboxEvent.objects.filter(aggregate_id=order_id).order_by("version")
    assert [(e.type, e.version) for e in events] == [("order.created", 1), ("order.cancelled", 2)]


def test_cancel_racing_payment_has_exactly_one_winner():
    # given pending orders, each raced by a cancel and a payment
    product = make_product(stock=100)
    _, key, http = new_api()
    order_ids = [post_order(http, order_body([(product, 2)])).json()["id"] for _ in range(10)]
    before_stock = Product.objects.get(pk=product.pk).stock
    outcomes: dict[str, dict[str, object]] = {order_id: {} for order_id in order_ids}
    lock = threading.Lock()

    def cancel(order_id):
        def task(http):
            response = http.post(cancel_url(order_id))
            with lock:
                outcomes[order_id]["cancel"] = response

        return task

    def pay(order_id):
        def task(http):
            try:
                result: object = order_mark_paid(order_id=order_id).status
            except (InvalidTransition, OrderNotCancellable) as exc:
                result = exc
            with lock:
                outcomes[order_id]["pay"] = result

        return task

    # when, for each order, a cancel and a payment start at the same moment
    for order_id in order_ids:
        run_in_threads([cancel(order_id), pay(order_id)], workers=2, make_http=lambda: api_for(key))

    # then each order has exactly one winner and consistent side effects
    restored = 0
    for order_id in order_ids:
        order = Order.objects.get(pk=order_id)
        cancel_response = outcomes[order_id]["cancel"]
        pay_result = outcomes[order_id]["pay"]
        types = list(
            OutboxEvent.objects.filter(aggregate_id=order_id)
            .order_by("version")
            .values_list("type", flat=True)
        )
        if order.status == OrderStatus.PAID:
            assert pay_result == OrderStatus.PAID
            assert cancel_response.status_code == 409
            assert cancel_response.json()["code"] == "order_not_cancellable"
            assert types == ["order.created", "order.paid"]
        else:
            assert order.status == OrderStatus.CANCELLED
            assert cancel_response.status_code == 200
            assert isinstance(pay_result, InvalidTransition)
            assert types == ["order.created", "order.cancelled"]
            restored += 2
    assert Product.objects.get(pk=product.pk).stock == before_stock + restored
    assert sold_units(product) == 100 - Product.objects.get(pk=product.pk).stock


def test_concurrent_retries_take_over_a_dead_claim_exactly_once():
    # given a key left in progress by a request that died, its lease expired
    product = make_product(stock=10)
    row, key, _ = new_api()
    body = order_body([(product, 2)])
    now = timezone.now()
    IdempotencyRecord.objects.create(
        client=row,
        key="orphan",
        fingerprint=request_fingerprint(body),
        status=IdempotencyStatus.IN_PROGRESS,
        claim_token=uuid.uuid4(),
        locked_until=now - timedelta(seconds=5),
        expires_at=now + timedelta(days=1),
    )

    # when 16 retries of it arrive at once
    tasks = [lambda http: post_order(http, body, key="orphan")] * 16
    responses = run_in_threads(tasks, workers=16, make_http=lambda: api_for(key))

    # then exactly one took the key over and created the order
    firsts = [r for r in responses if r.status_code == 201 and r["Idempotent-Replayed"] == "false"]
    assert len(firsts) == 1
    assert all(
        (r.status_code == 201 and r.content == firsts[0].content)
        or (r.status_code == 409 and r.json()["code"] == "idempotency_key_in_use")
        for r in responses
    )
    assert Order.objects.count() == 1
    assert Product.objects.get(pk=product.pk).stock == 8
    assert OutboxEvent.objects.filter(type="order.created").count() == 1
