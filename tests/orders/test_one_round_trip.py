"""The failure paths of the one-round-trip creation (issue 11): what happens when the data
an order read changes before its unit of work commits, or its claim is lost meanwhile.

Each race is made to happen at one exact point: right after the order's unlocked read of
its products, another thread (with its own database connection, committing) changes what
the test is about. The order's unit of work then meets the change under its locks.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.db import connection

from catalog.models import Product
from catalog.services import product_update_by_staff
from orders import services
from orders.models import IdempotencyRecord, IdempotencyStatus, Order, OrderItem
from outbox.models import OutboxEvent
from payments.models import Payment
from tests.factories import make_product
from tests.orders.helpers import api_for, new_api, order_body, post_order, unique_key
from tests.together import StartLine

pytestmark = pytest.mark.django_db(transaction=True)


def in_another_thread(change: Callable[[], None]) -> None:
    """Run `change` on another connection and wait for it to commit."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            change()
        except BaseException as error:  # reported in the test's thread
            failures.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive() and not failures, failures


@pytest.fixture
def after_the_read(monkeypatch):
    """after_the_read(change): run `change` right after the next order's product read."""

    def arrange(change: Callable[[], None]) -> list[int]:
        reads: list[int] = []
        real = services.product_snapshots

        def read_then_change(**kwargs):
            snapshots = real(**kwargs)
            if not reads:
                in_another_thread(change)
            reads.append(1)
            return snapshots

        monkeypatch.setattr(services, "product_snapshots", read_then_change)
        return reads

    return arrange


def staff_edit(product: Product, *, stock_delta: int = 0, **fields) -> Callable[[], None]:
    def edit() -> None:
        current = Product.objects.get(pk=product.pk)
        product_update_by_staff(
            product_id=product.pk,
            fields=fields,
            stock_seen=current.stock,
            stock_entered=current.stock + stock_delta,
        )

    return edit


def nothing_of_the_order_written(client_id) -> bool:
    return not (
        Order.objects.filter(client_id=client_id).exists()
        or OrderItem.objects.filter(order__client_id=client_id).exists()
        or Payment.objects.filter(email__startswith="one-trip-").exists()
        or OutboxEvent.objects.filter(payload__client_id=str(client_id)).exists()
    )


def test_stock_sold_after_the_read_is_refused_with_the_stock_left(after_the_read):
    # given a product with 5 units, and an order for 4 of them
    client, _, http = new_api()
    product = make_product(stock=5)
    # when staff remove 3 units right after the order read the product (5 in stock then)
    reads = after_the_read(staff_edit(product, stock_delta=-3))
    response = post_order(http, order_body([(product, 4)], email="one-trip-a@example.com"))
    assert reads, "the one-round-trip path did not run"
    # then the guard refuses the work, and the locking path answers 409 with the stock left
    assert response.status_code == 409, response.content
    assert response.json()["code"] == "insufficient_stock"
    assert response.json()["products"] == [
        {"product_id": str(product.pk), "requested": 4, "available": 2}
    ]
    # and nothing was taken or written
    assert Product.objects.get(pk=product.pk).stock == 2
    assert nothing_of_the_order_written(client.pk)


def test_a_product_deactivated_after_the_read_is_refused(after_the_read):
    client, _, http = new_api()
    product, other = make_product(stock=5), make_product(stock=5)
    # when staff deactivate one of the order's products right after the read
    after_the_read(staff_edit(product, is_active=False))
    response = post_order(http, order_body([(product, 1), (other, 1)]))
    # then the order is refused as product_unavailable, nothing taken from either product
    assert response.status_code == 422, response.content
    assert response.json()["code"] == "product_unavailable"
    assert Product.objects.get(pk=product.pk).stock == 5
    assert Product.objects.get(pk=other.pk).stock == 5
    assert not Order.objects.filter(client_id=client.pk).exists()


def test_a_product_repriced_after_the_read_is_sold_at_the_new_price(after_the_read):
    # given a product at 10.00
    _, _, http = new_api()
    product = make_product(stock=5, price=Decimal("10.00"))
    # when staff change its price to 12.50 right after the order read it
    reads = after_the_read(staff_edit(product, price=Decimal("12.50")))
    response = post_order(http, order_body([(product, 2)]))
    assert reads, "the one-round-trip path did not run"
    # then the order carries the price in force when its stock was taken, not the one read
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["items"][0]["unit_price"] == "12.50"
    assert body["total"] == "25.00"
    order = Order.objects.get(pk=body["id"])
    assert order.total == Decimal("25.00")
    assert OrderItem.objects.get(order=order).unit_price == Decimal("12.50")
    event = OutboxEvent.objects.get(aggregate_id=str(order.pk), type="order.created")
    assert event.payload["total"] == "25.00"
    assert Payment.objects.get(order_id=order.pk).amount == Decimal("25.00")
    # and the stock was taken once
    assert Product.objects.get(pk=product.pk).stock == 3


def test_a_renamed_product_is_sold_under_its_new_name(after_the_read):
    _, _, http = new_api()
    product = make_product(stock=5, name="Old name")
    after_the_read(staff_edit(product, name="New name"))
    response = post_order(http, order_body([(product, 1)]))
    assert response.status_code == 201, response.content
    assert response.json()["items"][0]["name"] == "New name"
    assert Product.objects.get(pk=product.pk).stock == 4


def test_a_claim_taken_over_meanwhile_writes_nothing(after_the_read):
    # given an order request whose claim is taken over by another request right after its
    # read (as when its lease ran out while it was stalled)
    client, _, http = new_api()
    product = make_product(stock=5)
    key = unique_key()
    other_token = uuid.uuid4()

    def take_over() -> None:
        taken = IdempotencyRecord.objects.filter(client_id=client.pk, key=key).update(
            claim_token=other_token
        )
        assert taken == 1

    after_the_read(take_over)
    response = post_order(http, order_body([(product, 1)]), key=key)
    # then it answers idempotency_key_in_use and its work is rolled back entirely
    assert response.status_code == 409, response.content
    assert response.json()["code"] == "idempotency_key_in_use"
    assert Product.objects.get(pk=product.pk).stock == 5
    assert not Order.objects.filter(client_id=client.pk).exists()
    # and the claim stays the other request's, unfinished
    record = IdempotencyRecord.objects.get(client_id=client.pk, key=key)
    assert record.claim_token == other_token
    assert record.status == IdempotencyStatus.IN_PROGRESS


def test_the_same_key_sent_by_many_threads_at_once_creates_one_order():
    # given one body and one key, sent by 8 threads at the same moment
    client, api_key, _ = new_api()
    product = make_product(stock=100)
    body = order_body([(product, 1)])
    key = unique_key()
    start = StartLine(8)
    answers: list[tuple[int, bytes, str]] = []

    def send() -> None:
        http = api_for(api_key)
        try:
            start.wait()
            response = post_order(http, body, key=key)
            answers.append(
                (response.status_code, response.content, response.get("Idempotent-Replayed"))
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    start.release(what="8 threads at the start line")
    for thread in threads:
        thread.join(timeout=60)
    # then exactly one order exists and one unit of stock went
    assert len(answers) == 8
    assert Order.objects.filter(client_id=client.pk).count() == 1
    assert Product.objects.get(pk=product.pk).stock == 99
    # and every answer is that order (first or replayed, same bytes) or "in use, retry"
    created = [content for status, content, _ in answers if status == 201]
    assert created and all(content == created[0] for content in created)
    assert [replayed for status, _, replayed in answers if status == 201].count("false") == 1
    others = [status for status, _, _ in answers if status != 201]
    assert all(status == 409 for status in others), answers
