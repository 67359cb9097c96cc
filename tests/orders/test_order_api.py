"""The orders endpoints of SPEC §3: create, read, list and cancel."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
from django.db import connection

from catalog.models import Product
from orders.models import CancelReason, Order, OrderStatus
from orders.services import order_mark_paid
from outbox.models import OutboxEvent
from payments.models import Payment, PaymentStatus
from tests.common.helpers import assert_problem
from tests.factories import make_product
from tests.orders.helpers import (
    ORDERS_URL,
    Snapshot,
    api_for,
    cancel_url,
    detail_url,
    new_api,
    order_body,
    post_order,
)

pytestmark = pytest.mark.django_db


def _create(http, lines, **kwargs):
    response = post_order(http, order_body(lines, **kwargs))
    assert response.status_code == 201, response.content
    return response.json()


# --- create ------------------------------------------------------------------------------


def test_create_order_reserves_stock_and_snapshots_prices():
    # given two products
    _, _, http = new_api()
    pen = make_product(price=Decimal("2.50"), stock=10, name="Pen", sku="PEN-1")
    ink = make_product(price=Decimal("7.25"), stock=4, name="Ink", sku="INK-1")
    body = order_body([(pen, 3), (ink, 4)], email="Buyer@Example.com")

    # when the order is placed
    response = post_order(http, body, key="first-order")

    # then it is pending payment, priced from the catalog, with a Location
    assert response.status_code == 201, response.content
    order = response.json()
    assert order["status"] == "pending_payment"
    assert order["cancel_reason"] is None
    assert order["email"] == "buyer@example.com"
    assert order["currency"] == "USD"
    assert order["total"] == "36.50"  # 3 × 2.50 + 4 × 7.25
    assert order["payment"] is None or set(order["payment"]) == {"status", "provider_payment_id"}
    assert order["paid_at"] is None and order["cancelled_at"] is None
    assert order["expires_at"] > order["created_at"]
    assert sorted(
        (i["sku"], i["name"], i["unit_price"], i["quantity"], i["line_total"])
        for i in order["items"]
    ) == [("INK-1", "Ink", "7.25", 4, "29.00"), ("PEN-1", "Pen", "2.50", 3, "7.50")]
    assert response["Location"] == f"/api/v1/orders/{order['id']}/"
    assert response["Idempotent-Replayed"] == "false"
    # and the stock is reserved
    assert Product.objects.get(pk=pen.pk).stock == 7
    assert Product.objects.get(pk=ink.pk).stock == 0


def test_create_order_writes_one_order_created_event_with_the_request_id():
    # given
    _, _, http = new_api()
    product = make_product(stock=5)

    # when
    response = http.post(
        ORDERS_URL,
        data=json.dumps(order_body([(product, 2)])),
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="k1",
        HTTP_X_REQUEST_ID="req-abc-123",
    )

    # then the outbox holds exactly one order.created, version 1, correlated to the request
    assert response.status_code == 201
    order_id = response.json()["id"]
    event = OutboxEvent.objects.get()
    assert event.type == "order.created"
    assert (event.aggregate_type, event.aggregate_id, event.version) == ("order", order_id, 1)
    assert event.correlation_id == "req-abc-123"
    assert event.payload["order_id"] == order_id
    assert event.payload["items"][0]["quantity"] == 2
    assert event.status == "pending"


def test_later_catalog_changes_do_not_alter_a_placed_order():
    # given an order for a product
    _, _, http = new_api()
    product = make_product(price=Decimal("4.00"), name="Old name")
    order = _create(http, [(product, 2)])

    # when staff change the price and name
    Product.objects.filter(pk=product.pk).update(price=Decimal("99.00"), name="New name")

    # then the order keeps its snapshot
    again = http.get(detail_url(order["id"])).json()
    assert again["total"] == "8.00"
    assert again["items"][0]["unit_price"] == "4.00"
    assert again["items"][0]["name"] == "Old name"


def test_order_endpoints_need_an_api_key(api):
    # given no key / an unknown key
    product = make_product()
    body = json.dumps(order_body([(product, 1)]))
    unknown = api_for("not-a-real-key")

    # then every order endpoint answers 401 and nothing is created
    before = Snapshot.take()
    for http in (api, unknown):
        code = "not_authenticated" if http is api else "authentication_failed"
        response = http.post(
            ORDERS_URL, data=body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k"
        )
        assert_problem(response, status=401, code=code)
        assert_problem(http.get(ORDERS_URL), status=401, code=code)
        assert_problem(http.get(detail_url(uuid.uuid4())), status=401, code=code)
        assert_problem(http.post(cancel_url(uuid.uuid4())), status=401, code=code)
    assert Snapshot.take() == before


# --- read --------------------------------------------------------------------------------


def test_get_order_returns_the_clients_own_order():
    # given
    _, _, http = new_api()
    order = _create(http, [(make_product(), 1)])

    # when
    response = http.get(detail_url(order["id"]))

    # then it is the order the creation returned (the payment saga may have moved on since)
    assert response.status_code == 200
    body = response.json()
    assert {k: v for k, v in body.items() if k != "payment"} == {
        k: v for k, v in order.items() if k != "payment"
    }


def test_another_clients_order_is_404_for_read_and_cancel():
    # given an order of client A
    _, _, owner = new_api()
    _, _, stranger = new_api()
    product = make_product(stock=5)
    order = _create(owner, [(product, 2)])
    before = Snapshot.take()

    # when client B reads or cancels it
    read = stranger.get(detail_url(order["id"]))
    cancel = stranger.post(cancel_url(order["id"]))

    # then both look like it does not exist, and nothing changes
    assert_problem(read, status=404, code="not_found")
    assert_problem(cancel, status=404, code="not_found")
    assert Order.objects.get(pk=order["id"]).status == OrderStatus.PENDING_PAYMENT
    assert Snapshot.take() == before
    # and B's list does not show it
    assert stranger.get(ORDERS_URL).json()["results"] == []


def test_unknown_order_is_404():
    _, _, http = new_api()
    assert_problem(http.get(detail_url(uuid.uuid4())), status=404, code="not_found")
    assert_problem(http.post(cancel_url(uuid.uuid4())), status=404, code="not_found")


def test_list_is_newest_first_and_filters_by_status_and_email(settings):
    # given four orders, one of them cancelled, two for the same email
    settings.ORDER_RATE_LIMIT = "1000/60s"
    _, _, http = new_api()
    product = make_product(stock=100)
    first = _create(http, [(product, 1)], email="ann@example.com")
    second = _create(http, [(product, 1)], email="bob@example.com")
    third = _create(http, [(product, 1)], email="ann@example.com")
    fourth = _create(http, [(product, 1)], email="cy@example.com")
    assert http.post(cancel_url(second["id"])).status_code == 200

    # when listing
    everything = http.get(ORDERS_URL).json()
    cancelled = http.get(ORDERS_URL, {"status": "cancelled"}).json()
    pending = http.get(ORDERS_URL, {"status": "pending_payment"}).json()
    ann = http.get(ORDERS_URL, {"email": "Ann@Example.com"}).json()

    # then
    ids = [o["id"] for o in everything["results"]]
    assert ids == [fourth["id"], third["id"], second["id"], first["id"]]
    assert everything["next"] is None and everything["previous"] is None
    assert [o["id"] for o in cancelled["results"]] == [second["id"]]
    assert [o["id"] for o in pending["results"]] == [fourth["id"], third["id"], first["id"]]
    assert [o["id"] for o in ann["results"]] == [third["id"], first["id"]]


def test_list_paginates_with_cursors_without_skipping_or_repeating(settings):
    # given seven orders
    settings.ORDER_RATE_LIMIT = "1000/60s"
    _, _, http = new_api()
    product = make_product(stock=100)
    created = [_create(http, [(product, 1)])["id"] for _ in range(7)]

    # when walking pages of three forwards
    seen: list[str] = []
    page = http.get(ORDERS_URL, {"page_size": 3}).json()
    pages = 1
    while True:
        assert len(page["results"]) <= 3
        seen.extend(o["id"] for o in page["results"])
        if page["next"] is None:
            break
        page = http.get(page["next"]).json()
        pages += 1

    # then every order shows up once, newest first
    assert pages == 3
    assert seen == list(reversed(created))
    # and the previous link of the last page leads back
    back = http.get(page["previous"]).json()
    assert [o["id"] for o in back["results"]] == seen[3:6]


def test_list_shows_each_orders_payment_read_once_per_page(settings):
    # given three orders whose payments the provider has answered
    settings.ORDER_RATE_LIMIT = "1000/60s"
    _, _, http = new_api()
    product = make_product(stock=10)
    ids = [_create(http, [(product, 1)])["id"] for _ in range(3)]
    provider_ids = {order_id: f"pay_{uuid.uuid4().hex}" for order_id in ids}
    for order_id, provider_id in provider_ids.items():
        Payment.objects.filter(order_id=order_id).update(
            status=PaymentStatus.SUCCEEDED, provider_payment_id=provider_id
        )

    # when the page is listed, counting the reads of payments
    payment_reads: list[str] = []

    def count_payment_reads(execute, sql, params, many, context):
        if "payments_payment" in sql:
            payment_reads.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count_payment_reads):
        page = http.get(ORDERS_URL, {"page_size": 3}).json()

    # then every order shows its own payment, read in one query for the whole page
    assert {order["id"]: order["payment"] for order in page["results"]} == {
        order_id: {"status": "succeeded", "provider_payment_id": provider_id}
        for order_id, provider_id in provider_ids.items()
    }
    assert len(payment_reads) == 1


@pytest.mark.parametrize(
    "query",
    [
        {"status": "foo"},
        {"status": "PAID"},
        {"email": "not-an-email"},
        {"page_size": "0"},
        {"page_size": "101"},
        {"cursor": "garbage"},
    ],
    ids=["status-foo", "status-wrong-case", "email", "page-size-0", "page-size-101", "cursor"],
)
def test_list_rejects_bad_query_parameters(query):
    _, _, http = new_api()
    assert_problem(http.get(ORDERS_URL, query), status=400, code="validation_error")


# --- cancel ------------------------------------------------------------------------------


def test_cancel_pending_order_restores_stock_and_writes_event_version_2():
    # given a pending order of 3 + 2 units
    _, _, http = new_api()
    a = make_product(stock=5)
    b = make_product(stock=5)
    order = _create(http, [(a, 3), (b, 2)])

    # when it is cancelled
    response = http.post(cancel_url(order["id"]))

    # then
    assert response.status_code == 200, response.content
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancel_reason"] == "customer_requested"
    assert cancelled["cancelled_at"] is not None
    assert Product.objects.get(pk=a.pk).stock == 5
    assert Product.objects.get(pk=b.pk).stock == 5
    events = list(
        OutboxEvent.objects.filter(aggregate_id=order["id"])
        .order_by("version")
        .values_list("type", "version")
    )
    assert events == [("order.created", 1), ("order.cancelled", 2)]
    payload = OutboxEvent.objects.get(type="order.cancelled").payload
    assert payload["reason"] == CancelReason.CUSTOMER_REQUESTED


def test_cancelling_twice_is_idempotent():
    # given a cancelled order
    _, _, http = new_api()
    product = make_product(stock=5)
    order = _create(http, [(product, 2)])
    first = http.post(cancel_url(order["id"]))
    assert first.status_code == 200
    before = Snapshot.take()

    # when it is cancelled again
    again = http.post(cancel_url(order["id"]))

    # then 200 with the same order; no second event, stock restored only once
    assert again.status_code == 200
    assert again.json() == first.json()
    assert Snapshot.take() == before
    assert Product.objects.get(pk=product.pk).stock == 5
    assert OutboxEvent.objects.filter(type="order.cancelled").count() == 1


def test_paid_order_is_not_cancellable():
    # given a paid order
    _, _, http = new_api()
    product = make_product(stock=5)
    order = _create(http, [(product, 2)])
    order_mark_paid(order_id=order["id"])
    before = Snapshot.take()

    # when the client tries to cancel it
    response = http.post(cancel_url(order["id"]))

    # then
    problem = assert_problem(response, status=409, code="order_not_cancellable")
    assert "paid" in problem["detail"]
    assert Order.objects.get(pk=order["id"]).status == OrderStatus.PAID
    assert Snapshot.take() == before
    assert Product.objects.get(pk=product.pk).stock == 3


def test_paid_order_shows_paid_at_and_a_paid_event():
    # given
    _, _, http = new_api()
    order = _create(http, [(make_product(), 1)])

    # when
    order_mark_paid(order_id=order["id"])

    # then
    body = http.get(detail_url(order["id"])).json()
    assert body["status"] == "paid" and body["paid_at"] is not None
    assert list(
        OutboxEvent.objects.filter(aggregate_id=order["id"])
        .order_by("version")
        .values_list("type", "version")
    ) == [("order.created", 1), ("order.paid", 2)]


def test_email_rate_limit_counts_per_email_not_per_client(settings):
    # given a limit of one order per (client, email)
    settings.ORDER_RATE_LIMIT = "1/60s"
    _, _, http = new_api()
    product = make_product(stock=10)

    # when one client orders for two customers, then once more for the first
    first = post_order(http, order_body([(product, 1)], email="one@example.com"))
    other = post_order(http, order_body([(product, 1)], email="two@example.com"))
    again = post_order(http, order_body([(product, 1)], email="ONE@example.com"))

    # then the customers are limited independently (email compared case-insensitively)
    assert first.status_code == 201
    assert other.status_code == 201
    assert_problem(again, status=429, code="rate_limited")


def test_order_of_50_lines_is_accepted():
    # given 50 products, the most one order may list
    _, _, http = new_api()
    products = [make_product(stock=1) for _ in range(50)]

    # when all are ordered at once
    order = _create(http, [(product, 1) for product in products])

    # then
    assert len(order["items"]) == 50
    assert order["total"] == "500.00"
    assert set(Product.objects.values_list("stock", flat=True)) == {0}
