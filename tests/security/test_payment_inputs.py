"""Payment inputs an attacker or a confused provider can send (issue 9, items 2, 11–13).

- 11: a `webhook-timestamp` that is not a plausible integer is a 400, never a 500; the
  body's order id is accepted only in the canonical UUID form.
- 12: a signed event whose payment id belongs to another order's payment is recorded as a
  mismatch and acknowledged (2xx), even when two such events race; a saga step that gets
  such an id from the provider records nothing and never raises.
- 13: payment states move only through PAYMENT_TRANSITIONS: no refund of a payment that
  never succeeded, no success after a refund; a refund of a paid order refunds the order
  (`order.refunded`), restores no stock, and `refunded` is final and listed everywhere.
- 2: the fake provider's reads and /_chaos need its bearer token, and are closed without one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from http.server import ThreadingHTTPServer

import pytest
import requests
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

import payments.steps
from catalog.models import Product
from orders.models import ALLOWED_TRANSITIONS, CancelReason, Order, OrderStatus
from orders.selectors import order_payment_summaries
from orders.services import (
    InvalidTransition,
    OrderLine,
    order_cancel,
    order_create,
    order_mark_paid,
    order_mark_refunded,
)
from outbox.models import OutboxEvent
from payments.errors import PaymentTransitionNotAllowed, ProviderPaymentIdTaken
from payments.fake_provider import FakeProvider, ProviderConfig
from payments.fake_provider_http import make_handler
from payments.models import (
    PAYMENT_TRANSITIONS,
    Payment,
    PaymentStatus,
    WebhookInboxEntry,
    WebhookStatus,
)
from payments.provider import ProviderPayment
from payments.services import payment_transition
from payments.steps import payment_steps_run
from scripts.processes import (
    REPO,
    database_url,
    provider_command,
    service_env,
    start_process,
)
from scripts.servers import free_port
from tests.factories import make_api_client, make_product
from tests.payments.helpers import (
    WEBHOOK_PATH,
    WEBHOOK_SECRET,
    as_django_headers,
    signed_headers,
    unique_email,
    webhook_event,
)
from tests.together import StartLine, wait_threads


@pytest.fixture(autouse=True)
def webhook_secrets(settings):
    settings.PAYMENT_WEBHOOK_SECRETS = [WEBHOOK_SECRET]
    return settings


@dataclass
class Placed:
    order: Order
    product: Product
    client_key: str
    payment_id: str


def place_pending_order(*, stock: int = 10, quantity: int = 2) -> Placed:
    """An order in pending_payment whose payment the provider has accepted (pending)."""
    client, key = make_api_client()
    product = make_product(stock=stock, price=Decimal("10.00"))
    order = order_create(
        client=client,
        email=unique_email(),
        lines=[OrderLine(product_id=product.pk, quantity=quantity)],
    )
    provider_id = f"pay_{uuid.uuid4().hex}"
    Payment.objects.filter(order_id=order.pk).update(
        status=PaymentStatus.PENDING, provider_payment_id=provider_id
    )
    return Placed(order, product, key, provider_id)


def post_webhook(body: bytes, headers: dict[str, str]):
    return Client(raise_request_exception=False).post(
        WEBHOOK_PATH, data=body, content_type="application/json", **as_django_headers(headers)
    )


def send(event: dict, *, webhook_id: str | None = None):
    body = json.dumps(event).encode()
    return post_webhook(body, signed_headers(body, webhook_id=webhook_id))


def event_for(event_type: str, placed: Placed, *, payment_id: str | None = None) -> dict:
    return webhook_event(event_type, order=placed.order, payment_id=payment_id or placed.payment_id)


def state(placed: Placed) -> dict:
    order = Order.objects.get(pk=placed.order.pk)
    payment = Payment.objects.get(order_id=order.pk)
    return {
        "order": (order.status, order.cancel_reason, order.event_version),
        "payment": (payment.status, payment.provider_payment_id, payment.event_version),
        "stock": Product.objects.get(pk=placed.product.pk).stock,
        "outbox": OutboxEvent.objects.count(),
    }


def events_of(aggregate_id) -> list[tuple[str, int]]:
    return list(
        OutboxEvent.objects.filter(aggregate_id=str(aggregate_id))
        .order_by("version")
        .values_list("type", "version")
    )


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- 11: the timestamp header and the order id -------------------------------------------


def _sign_raw(*, webhook_id: str, timestamp: str, body: bytes) -> str:
    """A correct signature over whatever timestamp text is sent (webhook_sign takes ints)."""
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


NOT_PLAUSIBLE_TIMESTAMPS = {
    "400 digits": "9" * 400,
    "13 digits": "1" * 13,
    "plus sign": "+{now}",
    "minus sign": "-{now}",
    "leading space": " {now}",
    "underscores": "{now_underscored}",
    "Arabic-Indic digits": "{now_arabic}",
    "fullwidth digits": "{now_fullwidth}",
    "a fraction": "{now}.5",
    "exponent": "1e9",
    "hex": "0x6500",
}


def _render(template: str) -> str:
    now = str(int(time.time()))
    return template.format(
        now=now,
        now_underscored=f"{now[:4]}_{now[4:]}",
        now_arabic=now.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
        now_fullwidth=now.translate(str.maketrans("0123456789", "０１２３４５６７８９")),
    )


@pytest.mark.django_db
@pytest.mark.parametrize("case", list(NOT_PLAUSIBLE_TIMESTAMPS), ids=list(NOT_PLAUSIBLE_TIMESTAMPS))
def test_a_timestamp_that_is_not_a_plausible_integer_is_malformed(case):
    # given a success webhook, correctly signed over a timestamp that is no plain integer
    placed = place_pending_order()
    before = state(placed)
    body = json.dumps(event_for("payment.succeeded", placed)).encode()
    timestamp = _render(NOT_PLAUSIBLE_TIMESTAMPS[case])
    webhook_id = f"msg_{uuid.uuid4().hex}"
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": _sign_raw(webhook_id=webhook_id, timestamp=timestamp, body=body),
    }

    # when it arrives (before the fix: 400 digits overflowed the float comparison → 500)
    response = post_webhook(body, headers)

    # then 400 webhook_malformed, as problem+json, and nothing changed
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert response.json()["code"] == "webhook_malformed"
    assert WebhookInboxEntry.objects.count() == 0
    assert state(placed) == before


@pytest.mark.django_db
def test_a_plain_ascii_timestamp_is_still_accepted():
    placed = place_pending_order()
    response = send(event_for("payment.succeeded", placed))
    assert response.status_code == 200, response.content
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.PAID


NON_CANONICAL_ORDER_IDS = {
    "dash-less hex": lambda u: u.hex,
    "urn:uuid:": lambda u: u.urn,
    "braces": lambda u: "{" + str(u) + "}",
    "JSON integer": lambda u: u.int,
    "surrounding space": lambda u: f" {u} ",
    "dashes moved": lambda u: u.hex[:4] + "-" + u.hex[4:],
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", list(NON_CANONICAL_ORDER_IDS), ids=list(NON_CANONICAL_ORDER_IDS))
def test_the_order_id_is_accepted_only_in_its_canonical_form(case):
    # given a signed success webhook naming a real order in another spelling of its id
    placed = place_pending_order()
    before = state(placed)
    event = event_for("payment.succeeded", placed)
    event["data"]["order_id"] = NON_CANONICAL_ORDER_IDS[case](placed.order.pk)

    # when it arrives
    response = send(event)

    # then it is malformed and changes nothing
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "webhook_malformed"
    assert state(placed) == before


@pytest.mark.django_db
def test_the_canonical_order_id_in_upper_case_is_the_same_order():
    placed = place_pending_order()
    event = event_for("payment.succeeded", placed)
    event["data"]["order_id"] = str(placed.order.pk).upper()
    assert send(event).status_code == 200
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.PAID


# --- 12: a payment id that belongs to another order --------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("event_type", ["payment.succeeded", "payment.failed", "refund.succeeded"])
def test_a_payment_id_of_another_order_is_a_mismatch_not_a_500(event_type, caplog):
    # given two orders; the provider's payment id of the first is known to us
    first, second = place_pending_order(), place_pending_order()
    before = (state(first), state(second))
    mismatches = metric("payments_webhooks_total", outcome="payment_id_mismatch")

    # when a signed event for the second order carries the first order's payment id,
    # delivered twice (the provider retries whatever is not 2xx)
    event = event_for(event_type, second, payment_id=first.payment_id)
    with caplog.at_level(logging.ERROR, logger="payments.webhooks"):
        responses = [send(event, webhook_id=f"msg_{uuid.uuid4().hex}") for _ in range(2)]

    # then each is acknowledged as a mismatch (before: IntegrityError, 500 for ever) ...
    assert [r.status_code for r in responses] == [200, 200], responses[0].content
    assert {r.json()["status"] for r in responses} == {WebhookStatus.MISMATCH}
    entries = list(WebhookInboxEntry.objects.all())
    assert [e.status for e in entries] == [WebhookStatus.MISMATCH] * 2
    assert all(first.payment_id in e.note and str(first.order.pk) in e.note for e in entries)
    # ... alerted in the log and the metrics, and nothing else changed
    assert any(
        r.levelno == logging.ERROR and "payment_id" in r.getMessage() for r in caplog.records
    )
    assert metric("payments_webhooks_total", outcome="payment_id_mismatch") == mismatches + 2
    assert (state(first), state(second)) == before


@pytest.mark.django_db(transaction=True)
def test_two_orders_racing_for_one_new_payment_id_never_get_a_5xx():
    rounds = 6
    outcomes = []
    for _ in range(rounds):
        # given two pending orders, and one provider payment id neither holds yet
        pair = [place_pending_order(), place_pending_order()]
        shared = f"pay_{uuid.uuid4().hex}"
        bodies = [
            json.dumps(event_for("payment.succeeded", p, payment_id=shared)).encode() for p in pair
        ]
        start = StartLine(2)
        responses: list = [None, None]

        def deliver(i: int, bodies=bodies, start=start, responses=responses) -> None:
            try:
                start.wait()
                responses[i] = post_webhook(bodies[i], signed_headers(bodies[i]))
            except BaseException as exc:  # reported below, not lost in the thread
                responses[i] = exc
            finally:
                connection.close()

        # when both successes arrive at once
        threads = [threading.Thread(target=deliver, args=(i,), daemon=True) for i in range(2)]
        for thread in threads:
            thread.start()
        start.release(what="both deliveries at the start line")
        wait_threads(
            threads,
            what="both deliveries",
            progress=lambda responses=responses: sum(r is not None for r in responses),
        )

        # then both are acknowledged; exactly one order holds the id and is paid
        assert [getattr(r, "status_code", r) for r in responses] == [200, 200]
        statuses = sorted(r.json()["status"] for r in responses)
        assert statuses == [WebhookStatus.APPLIED, WebhookStatus.MISMATCH]
        assert Payment.objects.filter(provider_payment_id=shared).count() == 1
        paid = [Order.objects.get(pk=p.order.pk).status == OrderStatus.PAID for p in pair]
        assert sorted(paid) == [False, True]
        outcomes.append(
            WebhookInboxEntry.objects.filter(status=WebhookStatus.MISMATCH)
            .latest("received_at")
            .note
        )
    # which way each race was caught: the check before the write, or the write itself
    print("mismatch notes:", outcomes)


@pytest.mark.django_db(transaction=True)
def test_a_saga_step_given_another_orders_payment_id_records_nothing_and_never_raises(
    monkeypatch, caplog
):
    # given an order owed a create step, and a provider that answers it with the payment id
    # of another order (outside our system: the provider's client is replaced)
    other = place_pending_order()
    client, _ = make_api_client()
    product = make_product(stock=5)
    order = order_create(
        client=client, email=unique_email(), lines=[OrderLine(product_id=product.pk, quantity=1)]
    )
    monkeypatch.setattr(
        payments.steps,
        "provider_create_payment",
        lambda **kwargs: ProviderPayment(id=other.payment_id, status="pending"),
    )
    taken = metric("payments_saga_steps_total", step="requesting", outcome="payment_id_taken")

    # when the step runs
    with caplog.at_level(logging.ERROR, logger="payments.steps"):
        report = payment_steps_run()

    # then it did not raise; the payment still waits for its create, the error recorded,
    # its lease released, and the other order's payment untouched
    assert report.claimed == 1 and report.succeeded == 0
    payment = Payment.objects.get(order_id=order.pk)
    assert payment.status == PaymentStatus.REQUESTING
    assert payment.provider_payment_id is None
    assert other.payment_id in payment.last_error
    assert payment.lease_token is None
    assert payment.next_attempt_at > timezone.now()
    assert Payment.objects.get(order_id=other.order.pk).provider_payment_id == other.payment_id
    assert (
        metric("payments_saga_steps_total", step="requesting", outcome="payment_id_taken")
        == taken + 1
    )
    assert any(r.levelno == logging.ERROR for r in caplog.records)


# --- 13: the payment state machine -------------------------------------------------------


def test_the_payment_transition_table_covers_every_status_and_never_goes_back():
    statuses = set(PaymentStatus.values)
    assert set(PAYMENT_TRANSITIONS) == statuses
    assert all(targets <= statuses for targets in PAYMENT_TRANSITIONS.values())
    assert PAYMENT_TRANSITIONS[PaymentStatus.REFUNDED] == frozenset()
    # a refund applies only to a payment that succeeded (or whose refund is under way) ...
    assert {
        s for s, targets in PAYMENT_TRANSITIONS.items() if PaymentStatus.REFUNDED in targets
    } == {
        PaymentStatus.SUCCEEDED,
        PaymentStatus.REFUND_REQUESTED,
        PaymentStatus.REFUND_PENDING,
    }
    # ... and no success follows a refund, a failure or a cancel
    reach_success = {s for s, t in PAYMENT_TRANSITIONS.items() if PaymentStatus.SUCCEEDED in t}
    assert reach_success == {PaymentStatus.REQUESTING, PaymentStatus.PENDING}


def test_the_order_table_has_paid_to_refunded_and_refunded_is_final():
    assert ALLOWED_TRANSITIONS[OrderStatus.PAID] == frozenset({OrderStatus.REFUNDED})
    assert ALLOWED_TRANSITIONS[OrderStatus.REFUNDED] == frozenset()
    assert set(ALLOWED_TRANSITIONS) == set(OrderStatus.values)


@pytest.mark.django_db
def test_payment_transition_applies_only_allowed_moves_and_only_from_the_expected_status():
    placed = place_pending_order()
    payment = Payment.objects.get(order_id=placed.order.pk)

    # a move the table does not allow is refused, and nothing is written
    with pytest.raises(PaymentTransitionNotAllowed):
        payment_transition(payment=payment, to=PaymentStatus.REFUNDED)
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.PENDING

    # a caller that read a stale status loses: the row count decides
    stale = Payment.objects.get(pk=payment.pk)
    assert payment_transition(payment=payment, to=PaymentStatus.SUCCEEDED) is True
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment_transition(payment=stale, to=PaymentStatus.FAILED) is False
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.SUCCEEDED

    # a provider id another payment holds is refused before the write, never an
    # IntegrityError
    other = place_pending_order()
    with pytest.raises(ProviderPaymentIdTaken):
        payment_transition(
            payment=payment, to=PaymentStatus.REFUNDED, provider_payment_id=other.payment_id
        )
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.SUCCEEDED


@pytest.mark.django_db
def test_a_failed_payment_locks_the_order_then_the_products_then_the_payment():
    # given a pending order
    placed = place_pending_order()
    body = json.dumps(event_for("payment.failed", placed)).encode()

    # when its failure webhook cancels it and gives the stock back
    with CaptureQueriesContext(connection) as captured:
        assert post_webhook(body, signed_headers(body)).status_code == 200

    # then the locks come in the global order: order row, products, then the payment's row
    # (taken by the UPDATE that changes it, never by a SELECT ... FOR UPDATE before them)
    statements = [q["sql"] for q in captured.captured_queries]
    order_lock = next(
        i
        for i, sql in enumerate(statements)
        if 'FROM "orders_order"' in sql and "FOR UPDATE" in sql
    )
    product_lock = next(
        i
        for i, sql in enumerate(statements)
        if 'FROM "catalog_product"' in sql and "FOR NO KEY UPDATE" in sql
    )
    payment_write = next(
        i for i, sql in enumerate(statements) if sql.startswith('UPDATE "payments_payment"')
    )
    assert order_lock < product_lock < payment_write
    assert not any('FROM "payments_payment"' in s and "FOR UPDATE" in s for s in statements)
    assert Payment.objects.get(order_id=placed.order.pk).status == PaymentStatus.FAILED


@pytest.mark.django_db
def test_a_refund_of_a_payment_that_never_succeeded_is_recorded_not_applied():
    # given a pending order whose payment is pending at the provider
    placed = place_pending_order()
    before = state(placed)

    # when a refund.succeeded arrives for it
    response = send(event_for("refund.succeeded", placed))

    # then it is acknowledged and recorded as ignored, with a note; no payment.refunded
    assert response.status_code == 200
    assert response.json()["status"] == WebhookStatus.IGNORED
    entry = WebhookInboxEntry.objects.get()
    assert entry.status == WebhookStatus.IGNORED
    assert "succeeded" in entry.note and PaymentStatus.PENDING in entry.note
    assert state(placed) == before
    assert not OutboxEvent.objects.filter(type="payment.refunded").exists()

    # and the success that then arrives is applied as usual (the refund did not stick)
    assert send(event_for("payment.succeeded", placed)).json()["status"] == WebhookStatus.APPLIED
    assert Payment.objects.get(order_id=placed.order.pk).status == PaymentStatus.SUCCEEDED


@pytest.mark.django_db
def test_a_refund_of_a_paid_order_refunds_the_order_and_nothing_moves_back_after():
    # given a paid order (its success applied)
    placed = place_pending_order(stock=10, quantity=2)
    assert send(event_for("payment.succeeded", placed)).json()["status"] == WebhookStatus.APPLIED
    assert Product.objects.get(pk=placed.product.pk).stock == 8

    # when the provider reports a refund of its payment
    response = send(event_for("refund.succeeded", placed))

    # then the payment and the order are refunded, each with its event, in one go
    assert response.status_code == 200
    assert response.json()["status"] == WebhookStatus.APPLIED
    order = Order.objects.get(pk=placed.order.pk)
    payment = Payment.objects.get(order_id=order.pk)
    assert (order.status, order.cancel_reason) == (OrderStatus.REFUNDED, "")
    assert order.paid_at is not None and order.cancelled_at is None
    assert order_payment_summaries(order_ids=[order.pk])[order.pk].status == PaymentStatus.REFUNDED
    assert payment.status == PaymentStatus.REFUNDED
    assert events_of(order.pk) == [("order.created", 1), ("order.paid", 2), ("order.refunded", 3)]
    assert events_of(payment.pk) == [("payment.refunded", 1)]
    refunded = OutboxEvent.objects.get(type="order.refunded")
    assert refunded.aggregate_type == "order"
    assert refunded.payload["status"] == "refunded"
    assert refunded.payload["order_id"] == str(order.pk)
    assert refunded.payload["total"] == str(order.total)
    # no stock comes back by itself (the goods may have shipped)
    assert Product.objects.get(pk=placed.product.pk).stock == 8

    # when a late success, a failure and the refund again arrive (new webhook ids)
    late = [
        send(event_for(kind, placed)).json()["status"]
        for kind in ("payment.succeeded", "payment.failed", "refund.succeeded")
    ]

    # then each is recorded, none applied: refunded is final for both
    assert late == [WebhookStatus.IGNORED] * 3
    order.refresh_from_db()
    payment.refresh_from_db()
    assert (order.status, payment.status) == (OrderStatus.REFUNDED, PaymentStatus.REFUNDED)
    assert OutboxEvent.objects.filter(type__in=["order.refunded", "payment.refunded"]).count() == 2
    assert Product.objects.get(pk=placed.product.pk).stock == 8


@pytest.mark.django_db
def test_a_late_success_of_a_cancelled_order_is_refunded_and_the_order_stays_cancelled():
    # given an order the customer cancelled while its payment was pending
    placed = place_pending_order(stock=10, quantity=2)
    order_cancel(order_id=placed.order.pk, reason=CancelReason.CUSTOMER_REQUESTED)
    Payment.objects.filter(order_id=placed.order.pk).update(status=PaymentStatus.CANCELLED)

    # when the success arrives anyway, and then the refund the saga asked for
    assert send(event_for("payment.succeeded", placed)).json()["status"] == WebhookStatus.APPLIED
    payment = Payment.objects.get(order_id=placed.order.pk)
    assert payment.status == PaymentStatus.REFUND_REQUESTED
    Payment.objects.filter(pk=payment.pk).update(status=PaymentStatus.REFUND_PENDING)
    assert send(event_for("refund.succeeded", placed)).json()["status"] == WebhookStatus.APPLIED

    # then the payment is refunded (payment.refunded), the order stays cancelled
    order = Order.objects.get(pk=placed.order.pk)
    assert (order.status, order.cancel_reason) == (
        OrderStatus.CANCELLED,
        CancelReason.CUSTOMER_REQUESTED,
    )
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.REFUNDED
    assert events_of(order.pk) == [("order.created", 1), ("order.cancelled", 2)]
    assert events_of(payment.pk) == [("payment.refunded", 1)]
    assert Product.objects.get(pk=placed.product.pk).stock == 10  # released once

    # and a success after that refund does not bring it back
    assert send(event_for("payment.succeeded", placed)).json()["status"] == WebhookStatus.IGNORED
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.REFUNDED


@pytest.mark.django_db
def test_a_refund_naming_another_payment_id_of_the_order_is_a_mismatch():
    # given a paid order
    placed = place_pending_order()
    send(event_for("payment.succeeded", placed))
    before = state(placed)

    # when a refund arrives for a payment id that is not the order's payment
    response = send(event_for("refund.succeeded", placed, payment_id="pay_someone_else"))

    # then it is a mismatch: recorded, not applied
    assert response.status_code == 200
    assert response.json()["status"] == WebhookStatus.MISMATCH
    assert state(placed) == before


@pytest.mark.django_db
def test_order_mark_refunded_accepts_only_paid_orders_and_is_idempotent():
    placed = place_pending_order()
    with pytest.raises(InvalidTransition):
        order_mark_refunded(order_id=placed.order.pk)
    order_mark_paid(order_id=placed.order.pk)
    first = order_mark_refunded(order_id=placed.order.pk)
    again = order_mark_refunded(order_id=placed.order.pk)
    assert first.status == again.status == OrderStatus.REFUNDED
    assert again.event_version == 3
    assert OutboxEvent.objects.filter(type="order.refunded").count() == 1
    # a refunded order is not paid again, nor cancelled
    with pytest.raises(InvalidTransition):
        order_mark_paid(order_id=placed.order.pk)


@pytest.mark.django_db
def test_the_database_keeps_refunded_orders_paid_at():
    placed = place_pending_order()
    order_mark_paid(order_id=placed.order.pk)
    order_mark_refunded(order_id=placed.order.pk)
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.filter(pk=placed.order.pk).update(paid_at=None)
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.filter(pk=placed.order.pk).update(status="refunded_twice")


@pytest.mark.django_db
def test_the_api_lists_filters_shows_and_refuses_to_cancel_refunded_orders():
    # given a client with a refunded order and a paid one
    placed = place_pending_order()
    other = Order.objects.create(
        client=placed.order.client,
        email=unique_email(),
        total=Decimal("1.00"),
        currency="USD",
        expires_at=timezone.now(),
    )
    order_mark_paid(order_id=other.pk)
    order_mark_paid(order_id=placed.order.pk)
    order_mark_refunded(order_id=placed.order.pk)
    api = APIClient()
    api.credentials(HTTP_X_API_KEY=placed.client_key)

    # then ?status=refunded finds it (and only it), the detail says so, a cancel is a 409
    listed = api.get("/api/v1/orders/", {"status": "refunded"})
    assert listed.status_code == 200, listed.content
    assert [o["id"] for o in listed.json()["results"]] == [str(placed.order.pk)]
    assert api.get(f"/api/v1/orders/{placed.order.pk}/").json()["status"] == "refunded"
    cancel = api.post(f"/api/v1/orders/{placed.order.pk}/cancel/")
    assert cancel.status_code == 409
    assert cancel.json()["code"] == "order_not_cancellable"
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.REFUNDED

    # and the OpenAPI document lists refunded wherever it lists order statuses
    schema = Client().get("/api/schema/", {"format": "json"}).json()
    enums = [
        values["enum"]
        for values in _walk(schema)
        if isinstance(values, dict) and "pending_payment" in values.get("enum", [])
    ]
    assert enums, "no order status enum in the schema"
    assert all("refunded" in enum for enum in enums)


def _walk(node):
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.mark.django_db
def test_the_admin_filters_and_the_operations_page_know_refunded(admin_client):
    placed = place_pending_order()
    order_mark_paid(order_id=placed.order.pk)
    order_mark_refunded(order_id=placed.order.pk)

    changelist = admin_client.get("/admin/orders/order/", {"status__exact": "refunded"})
    assert changelist.status_code == 200
    assert str(placed.order.pk) in changelist.content.decode()

    page = admin_client.get("/admin/operations/")
    assert page.status_code == 200
    assert 'data-status="refunded">1<' in page.content.decode()


# --- 2: the fake provider's token ---------------------------------------------------------


TOKEN = "provider-test-token-0123456789"


@pytest.fixture
def provider_server():
    """The fake provider's HTTP server in this process, with a token or none."""
    servers = []

    def start(token: str | None) -> str:
        provider = FakeProvider(
            ProviderConfig(
                webhook_url=f"http://127.0.0.1:{free_port()}/nobody-listens",
                webhook_secret=WEBHOOK_SECRET,
                webhook_delay=3600,
                token=token,
            )
        )
        server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(provider))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _create(url: str) -> dict:
    response = requests.post(
        f"{url}/v1/payments",
        json={"order_id": "o-1", "amount": "5.00", "currency": "USD", "email": "a@example.com"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
        timeout=5,
    )
    assert response.status_code == 201, response.text
    return response.json()


def _guarded_calls(url: str, payment_id: str, headers: dict) -> dict[str, requests.Response]:
    return {
        "list": requests.get(f"{url}/v1/payments", headers=headers, timeout=5),
        "read": requests.get(f"{url}/v1/payments/{payment_id}", headers=headers, timeout=5),
        "chaos": requests.post(f"{url}/_chaos", json={"error_rate": 1}, headers=headers, timeout=5),
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["no token", "wrong token", "token plus a byte", "basic scheme", "no scheme"],
)
def test_the_providers_reads_and_chaos_need_its_token(provider_server, headers):
    # given a provider with a token and a payment in it
    url = provider_server(TOKEN)
    payment = _create(url)

    # when its reads and /_chaos are called without the right bearer token
    answers = _guarded_calls(url, payment["id"], headers)

    # then each is refused, with no payment data, and the chaos switches did not change
    for name, response in answers.items():
        assert response.status_code == 401, (name, response.text)
        assert "a@example.com" not in response.text
    assert _create(url)["status"] == "pending"  # error_rate still 0

    # and with the token they work
    answers = _guarded_calls(url, payment["id"], {"Authorization": f"Bearer {TOKEN}"})
    assert {name: r.status_code for name, r in answers.items()} == {
        "list": 200,
        "read": 200,
        "chaos": 200,
    }
    assert [p["email"] for p in answers["list"].json()["results"]] == ["a@example.com"] * 2
    assert answers["chaos"].json()["error_rate"] == 1


def test_a_provider_without_a_token_refuses_its_reads_and_chaos_to_everyone(provider_server):
    # given a provider started with no token
    url = provider_server(None)
    payment = _create(url)

    # when anyone calls its reads or /_chaos, with or without some bearer token
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": f"Bearer {TOKEN}"}):
        answers = _guarded_calls(url, payment["id"], headers)
        # then 403: closed, never open
        assert {name: r.status_code for name, r in answers.items()} == {
            "list": 403,
            "read": 403,
            "chaos": 403,
        }
    # while payments and health work as before
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
    assert requests.post(f"{url}/v1/payments/{payment['id']}/cancel", timeout=5).ok


@pytest.mark.django_db
@pytest.mark.parametrize(
    "token", ["", TOKEN], ids=["no FAKE_PROVIDER_TOKEN", "FAKE_PROVIDER_TOKEN"]
)
def test_run_fake_provider_takes_its_token_from_the_environment(tmp_path, token):
    # given the run_fake_provider process, as make run and the tests start it
    port = free_port()
    env = service_env(
        database_url=database_url(connection.settings_dict),
        redis_url="redis://127.0.0.1:6379/15",
        drop_prefixes=("FAKE_PROVIDER_",),
        PAYMENT_WEBHOOK_SECRETS=WEBHOOK_SECRET,
        FAKE_PROVIDER_TOKEN=token,
    )
    argv = provider_command(
        port=port,
        webhook_url=f"http://127.0.0.1:{free_port()}/nobody-listens",
        state_file=tmp_path / "state.json",
    )
    process = start_process("provider", argv, env, tmp_path / "provider.log", cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}"
        process.wait_http_ok(f"{url}/healthz", timeout=30, what="the fake provider")

        # when /_chaos is called with the token and without
        with_token = requests.post(
            f"{url}/_chaos", json={}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        )
        without = requests.post(f"{url}/_chaos", json={}, timeout=5)

        # then only a configured token opens it; with none configured it is closed (403)
        if token:
            assert (with_token.status_code, without.status_code) == (200, 401)
        else:
            assert (with_token.status_code, without.status_code) == (403, 403)
        # and it listens on 127.0.0.1 only (the default host)
        assert "127.0.0.1" in process.log_text()
    finally:
        process.stop()


def test_make_run_generates_the_provider_token_once_and_keeps_it_private(tmp_path, monkeypatch):
    import scripts.run as run

    # given no FAKE_PROVIDER_TOKEN and an empty .local/
    monkeypatch.delenv("FAKE_PROVIDER_TOKEN", raising=False)
    monkeypatch.setattr(run, "ROOT", tmp_path)
    monkeypatch.setattr(run, "LOCAL_DIR", tmp_path / ".local")
    monkeypatch.setattr(run, "PROVIDER_TOKEN_FILE", tmp_path / ".local" / "fake_provider_token")

    # when make run starts twice
    first = run.local_provider_token()
    second = run.local_provider_token()

    # then one strong token is generated, kept owner-only, and reused
    assert first == second and len(first) >= 32
    assert (run.PROVIDER_TOKEN_FILE.stat().st_mode & 0o777) == 0o600
    # and an explicit FAKE_PROVIDER_TOKEN wins
    monkeypatch.setenv("FAKE_PROVIDER_TOKEN", "from-the-environment")
    assert run.local_provider_token() == "from-the-environment"
