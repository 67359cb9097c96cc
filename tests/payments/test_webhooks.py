"""The webhook receiver, in process (SPEC §5): Standard Webhooks verification on the raw
body, rejections with no state change, secret rotation, exactly-once application under
concurrent redelivery, states that only move forward, a cancel racing a success, amount
mismatches and events that arrive before their order.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from catalog.models import Product
from orders.models import CancelReason, Order, OrderItem, OrderStatus
from orders.services import OrderLine, order_create
from outbox.models import OutboxEvent
from payments.models import Payment, PaymentStatus, WebhookInboxEntry, WebhookStatus
from payments.signatures import webhook_sign
from payments.webhooks import webhook_retry_waiting
from tests.factories import make_api_client, make_product
from tests.payments.helpers import (
    OLD_WEBHOOK_SECRET,
    WEBHOOK_PATH,
    WEBHOOK_SECRET,
    as_django_headers,
    reserved_by_live_orders,
    signed_headers,
    unique_email,
    webhook_event,
)
from tests.together import StartLine, wait_threads

# A secret no configuration of these tests knows.
STRANGER_SECRET = "whsec_c29tZWJvZHktZWxzZXMtc2VjcmV0LTEyMzQ1Ng=="


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


def place_pending_order(*, stock: int = 10, quantity: int = 2, email: str | None = None) -> Placed:
    """An order in pending_payment whose payment the provider has accepted (pending)."""
    client, key = make_api_client()
    product = make_product(stock=stock, price=Decimal("10.00"))
    order = order_create(
        client=client,
        email=email or unique_email(),
        lines=[OrderLine(product_id=product.pk, quantity=quantity)],
    )
    provider_id = f"pay_{uuid.uuid4().hex}"
    Payment.objects.filter(order_id=order.pk).update(
        status=PaymentStatus.PENDING, provider_payment_id=provider_id
    )
    return Placed(order, product, key, provider_id)


def post_webhook(body: bytes, headers: dict[str, str], client: Client | None = None):
    return (client or Client()).post(
        WEBHOOK_PATH, data=body, content_type="application/json", **as_django_headers(headers)
    )


def send(event: dict, *, webhook_id: str | None = None, secret: str = WEBHOOK_SECRET):
    body = json.dumps(event).encode()
    return post_webhook(body, signed_headers(body, secret=secret, webhook_id=webhook_id))


def snapshot(placed: Placed) -> dict:
    order = Order.objects.get(pk=placed.order.pk)
    return {
        "inbox": WebhookInboxEntry.objects.count(),
        "order": (order.status, order.cancel_reason, order.event_version),
        "stock": Product.objects.get(pk=placed.product.pk).stock,
        "outbox": OutboxEvent.objects.count(),
        "payment": Payment.objects.get(order_id=order.pk).status,
    }


def terminal_events(order_id) -> list[tuple[str, int]]:
    return list(
        OutboxEvent.objects.filter(aggregate_id=str(order_id))
        .exclude(type="order.created")
        .order_by("version")
        .values_list("type", "version")
    )


# --- rejections --------------------------------------------------------------------------


def _flip_a_byte(body, headers):
    flipped = bytearray(body)
    flipped[len(flipped) // 2] ^= 0x01
    return bytes(flipped), headers


def _wrong_secret(body, headers):
    return body, signed_headers(body, secret=STRANGER_SECRET)


def _seconds_away_at_least(offset: int) -> int:
    """A whole-second timestamp at least |offset| s from now, however the clock's fraction
    falls (the header is whole seconds; the server compares with its own float clock)."""
    now = time.time()
    return math.ceil(now) + offset if offset > 0 else math.floor(now) + offset


def _seconds_away_at_most(offset: int) -> int:
    """A whole-second timestamp at most |offset| s from now (see above)."""
    now = time.time()
    return math.floor(now) + offset if offset > 0 else math.ceil(now) + offset


def _timestamp(offset):
    def build(body, headers):
        return body, signed_headers(body, timestamp=_seconds_away_at_least(offset))

    return build


def _without(name):
    def build(body, headers):
        return body, {k: v for k, v in headers.items() if k != name}

    return build


def _signed(new_body):
    def build(body, headers):
        raw = new_body(body)
        return raw, signed_headers(raw)

    return build


def _reshaped(change):
    def build(body, headers):
        event = json.loads(body)
        change(event)
        raw = json.dumps(event).encode()
        return raw, signed_headers(raw)

    return build


def _padded_over_64_kib(body):
    event = json.loads(body)
    event["padding"] = "x" * (64 * 1024)
    return json.dumps(event).encode()


REJECTIONS = {
    "flipped body byte": (_flip_a_byte, 401, "webhook_signature_invalid"),
    "wrong secret": (_wrong_secret, 401, "webhook_signature_invalid"),
    "timestamp 301 s old": (_timestamp(-301), 401, "webhook_signature_invalid"),
    "timestamp 301 s ahead": (_timestamp(301), 401, "webhook_signature_invalid"),
    "signature missing": (_without("webhook-signature"), 401, "webhook_signature_invalid"),
    "signature not base64": (
        lambda b, h: (b, {**h, "webhook-signature": "v1,!!!not-base64!!!"}),
        401,
        "webhook_signature_invalid",
    ),
    "webhook-id missing": (_without("webhook-id"), 400, "webhook_malformed"),
    "webhook-timestamp missing": (_without("webhook-timestamp"), 400, "webhook_malformed"),
    "timestamp not a number": (
        lambda b, h: (b, {**h, "webhook-timestamp": "yesterday"}),
        400,
        "webhook_malformed",
    ),
    "body not JSON": (_signed(lambda b: b"{not json"), 400, "webhook_malformed"),
    "body a JSON list": (_signed(lambda b: b"[1, 2]"), 400, "webhook_malformed"),
    "unknown event type": (
        _reshaped(lambda e: e.update(type="payment.exploded")),
        400,
        "webhook_malformed",
    ),
    "data missing": (_reshaped(lambda e: e.pop("data")), 400, "webhook_malformed"),
    "amount not a decimal": (
        _reshaped(lambda e: e["data"].update(amount="ten dollars")),
        400,
        "webhook_malformed",
    ),
    "order_id not a uuid": (
        _reshaped(lambda e: e["data"].update(order_id="order-42")),
        400,
        "webhook_malformed",
    ),
    "payment_id missing": (
        _reshaped(lambda e: e["data"].pop("payment_id")),
        400,
        "webhook_malformed",
    ),
    "body over 64 KiB": (_signed(_padded_over_64_kib), 413, "payload_too_large"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", list(REJECTIONS), ids=list(REJECTIONS))
def test_rejected_webhooks_change_nothing(case):
    # given a pending order and a valid success webhook for it
    placed = place_pending_order()
    event = webhook_event("payment.succeeded", order=placed.order, payment_id=placed.payment_id)
    body = json.dumps(event).encode()
    build, status, code = REJECTIONS[case]
    before = snapshot(placed)

    # when it reaches us tampered with, stale, incomplete or oversized
    raw, headers = build(body, signed_headers(body))
    response = post_webhook(raw, headers)

    # then it is refused as problem+json, and nothing changed
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem["code"] == code
    assert snapshot(placed) == before
    # the untampered webhook still works afterwards: the refusal did not use up its id
    assert send(event).status_code == 200
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.PAID


@pytest.mark.django_db
def test_timestamps_within_the_tolerance_are_accepted_both_ways():
    for offset in (-299, 299):
        placed = place_pending_order()
        event = webhook_event("payment.succeeded", order=placed.order, payment_id=placed.payment_id)
        body = json.dumps(event).encode()
        headers = signed_headers(body, timestamp=_seconds_away_at_most(offset))
        assert post_webhook(body, headers).status_code == 200
        assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.PAID


# --- secret rotation ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_old_secret_works_during_rotation_and_not_after(settings):
    # given a rotation in progress: the new secret first, the old one still accepted
    settings.PAYMENT_WEBHOOK_SECRETS = [WEBHOOK_SECRET, OLD_WEBHOOK_SECRET]
    signed_with_old = place_pending_order()
    two_signatures = place_pending_order()
    after_rotation = place_pending_order()

    # when a webhook is signed with the old secret only
    response = send(
        webhook_event(
            "payment.succeeded", order=signed_with_old.order, payment_id=signed_with_old.payment_id
        ),
        secret=OLD_WEBHOOK_SECRET,
    )
    # then it is accepted
    assert response.status_code == 200, response.content
    assert Order.objects.get(pk=signed_with_old.order.pk).status == OrderStatus.PAID

    # when a header carries two signatures (a stranger's secret and the new one)
    event = webhook_event(
        "payment.succeeded", order=two_signatures.order, payment_id=two_signatures.payment_id
    )
    body = json.dumps(event).encode()
    webhook_id, timestamp = f"msg_{uuid.uuid4().hex}", int(time.time())
    signatures = " ".join(
        webhook_sign(secret=secret, webhook_id=webhook_id, timestamp=timestamp, body=body)
        for secret in (STRANGER_SECRET, WEBHOOK_SECRET)
    )
    response = post_webhook(
        body,
        {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures,
        },
    )
    # then one matching signature is enough
    assert response.status_code == 200, response.content
    assert Order.objects.get(pk=two_signatures.order.pk).status == OrderStatus.PAID

    # when the rotation is over, the old secret no longer opens the door
    settings.PAYMENT_WEBHOOK_SECRETS = [WEBHOOK_SECRET]
    response = send(
        webhook_event(
            "payment.succeeded", order=after_rotation.order, payment_id=after_rotation.payment_id
        ),
        secret=OLD_WEBHOOK_SECRET,
    )
    assert response.status_code == 401
    assert Order.objects.get(pk=after_rotation.order.pk).status == OrderStatus.PENDING_PAYMENT


# --- deduplication -----------------------------------------------------------------------


def _in_threads(count: int, work) -> list:
    """Run work(i) in `count` threads released together; each closes its DB connection."""
    start = StartLine(count)
    results: list = [None] * count

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = work(i)
        except BaseException as exc:  # reported by the test, not lost in the thread
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    start.release(what=f"{count} threads at the start line")
    wait_threads(
        threads,
        what=f"{count} concurrent deliveries",
        progress=lambda: sum(result is not None for result in results),
    )
    return results


@pytest.mark.django_db(transaction=True)
def test_the_same_event_delivered_ten_times_at_once_and_again_later_applies_once():
    # given
    placed = place_pending_order(stock=10, quantity=2)
    event = webhook_event("payment.succeeded", order=placed.order, payment_id=placed.payment_id)
    body = json.dumps(event).encode()
    headers = signed_headers(body)

    # when the provider delivers the same webhook 10 times concurrently
    responses = _in_threads(10, lambda i: post_webhook(body, headers))

    # then every copy is acknowledged, and it was applied once
    assert [r.status_code for r in responses] == [200] * 10, responses
    outcomes = sorted(r.json()["status"] for r in responses)
    assert outcomes == ["applied"] + ["duplicate"] * 9
    assert WebhookInboxEntry.objects.count() == 1
    assert terminal_events(placed.order.pk) == [("order.paid", 2)]
    assert Order.objects.get(pk=placed.order.pk).status == OrderStatus.PAID
    assert Product.objects.get(pk=placed.product.pk).stock == 8

    # when it comes again days later (same id, a fresh timestamp and signature)
    WebhookInboxEntry.objects.update(received_at=timezone.now() - timedelta(days=3))
    later = signed_headers(body, webhook_id=headers["webhook-id"])
    response = post_webhook(body, later)

    # then it is acknowledged and changes nothing
    assert response.status_code == 200
    assert response.json()["status"] == "duplicate"
    assert WebhookInboxEntry.objects.count() == 1
    assert terminal_events(placed.order.pk) == [("order.paid", 2)]
    assert Order.objects.get(pk=placed.order.pk).event_version == 2


# --- states only move forward ------------------------------------------------------------


@pytest.mark.django_db
def test_failed_after_succeeded_is_recorded_not_applied():
    placed = place_pending_order(stock=10, quantity=2)
    assert (
        send(
            webhook_event("payment.succeeded", order=placed.order, payment_id=placed.payment_id)
        ).status_code
        == 200
    )

    response = send(
        webhook_event("payment.failed", order=placed.order, payment_id=placed.payment_id)
    )

    assert response.status_code == 200
    assert response.json()["status"] == WebhookStatus.IGNORED
    order = Order.objects.get(pk=placed.order.pk)
    assert (order.status, order.cancel_reason) == (OrderStatus.PAID, "")
    assert Payment.objects.get(order_id=order.pk).status == PaymentStatus.SUCCEEDED
    assert Product.objects.get(pk=placed.product.pk).stock == 8  # still sold
    assert terminal_events(order.pk) == [("order.paid", 2)]
    assert sorted(WebhookInboxEntry.objects.values_list("event_type", "status")) == [
        ("payment.failed", WebhookStatus.IGNORED),
        ("payment.succeeded", WebhookStatus.APPLIED),
    ]


@pytest.mark.django_db
def test_succeeded_after_failed_leaves_the_order_cancelled_and_requests_a_refund():
    placed = place_pending_order(stock=10, quantity=2)
    failed = webhook_event("payment.failed", order=placed.order, payment_id=placed.payment_id)
    assert send(failed).status_code == 200
    assert Product.objects.get(pk=placed.product.pk).stock == 10  # compensation

    response = send(
        webhook_event("payment.succeeded", order=placed.order, payment_id=placed.payment_id)
    )

    assert response.status_code == 200
    order = Order.objects.get(pk=placed.order.pk)
    assert (order.status, order.cancel_reason) == (
        OrderStatus.CANCELLED,
        CancelReason.PAYMENT_FAILED,
    )
    payment = Payment.objects.get(order_id=order.pk)
    assert payment.status == PaymentStatus.REFUND_REQUESTED  # the money goes back
    assert payment.next_attempt_at <= timezone.now()
    assert Product.objects.get(pk=placed.product.pk).stock == 10  # released once, not twice
    assert terminal_events(order.pk) == [("order.cancelled", 2)]


# --- a cancel racing a success -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_cancel_racing_a_success_webhook_has_exactly_one_winner():
    rounds = 8
    placed = [place_pending_order(stock=20, quantity=3) for _ in range(rounds)]
    outcomes = []
    for p in placed:
        event = webhook_event("payment.succeeded", order=p.order, payment_id=p.payment_id)
        body = json.dumps(event).encode()
        headers = signed_headers(body)
        consumer = APIClient()
        consumer.credentials(HTTP_X_API_KEY=p.client_key)

        def work(i, p=p, body=body, headers=headers, consumer=consumer):
            if i == 0:
                return consumer.post(f"/api/v1/orders/{p.order.pk}/cancel/")
            return post_webhook(body, headers)

        cancel, webhook = _in_threads(2, work)
        assert webhook.status_code == 200, webhook
        order = Order.objects.get(pk=p.order.pk)
        payment = Payment.objects.get(order_id=order.pk)
        if order.status == OrderStatus.PAID:
            # the success won: the late cancel is refused, the units stay sold
            assert cancel.status_code == 409, cancel.content
            assert cancel.json()["code"] == "order_not_cancellable"
            assert payment.status == PaymentStatus.SUCCEEDED
            assert terminal_events(order.pk) == [("order.paid", 2)]
        else:
            # the cancel won: the units are back and the late success is refunded
            assert cancel.status_code == 200, cancel.content
            assert order.cancel_reason == CancelReason.CUSTOMER_REQUESTED
            assert payment.status == PaymentStatus.REFUND_REQUESTED
            assert terminal_events(order.pk) == [("order.cancelled", 2)]
        assert Product.objects.get(pk=p.product.pk).stock == 20 - reserved_by_live_orders(p.product)
        outcomes.append(order.status)
    print("winners:", outcomes)


# --- amount mismatch ---------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change", [{"amount": "999.00"}, {"currency": "EUR"}], ids=["amount", "currency"]
)
def test_an_amount_or_currency_mismatch_is_recorded_and_not_applied(change):
    placed = place_pending_order()
    before = snapshot(placed)
    event = webhook_event("payment.succeeded", order=placed.order, payment_id=placed.payment_id)
    event["data"].update(change)

    response = send(event)

    assert response.status_code == 200
    assert response.json()["status"] == WebhookStatus.MISMATCH
    entry = WebhookInboxEntry.objects.get()
    assert entry.status == WebhookStatus.MISMATCH
    assert entry.order_id == placed.order.pk
    after = snapshot(placed)
    assert after == {**before, "inbox": 1}  # recorded; order, stock, events, payment as they were


# --- an event before its order -----------------------------------------------------------


@pytest.mark.django_db
def test_an_event_for_an_order_not_there_yet_is_kept_and_applied_once_it_exists():
    # given a success webhook for an order id we do not know (yet)
    client, _ = make_api_client()
    product = make_product(stock=10, price=Decimal("10.00"))
    order_id = uuid.uuid4()
    event = {
        "type": "payment.succeeded",
        "data": {
            "payment_id": "pay_early",
            "order_id": str(order_id),
            "amount": "20.00",
            "currency": "USD",
        },
        "created_at": "2025-01-01T00:00:00+00:00",
    }

    # when it arrives
    response = send(event)

    # then it is acknowledged and kept, waiting
    assert response.status_code == 200
    assert response.json()["status"] == WebhookStatus.WAITING
    entry = WebhookInboxEntry.objects.get()
    assert entry.status == WebhookStatus.WAITING
    assert entry.next_attempt_at > timezone.now()
    assert webhook_retry_waiting() == 0  # not due yet

    # a retry while the order is still missing keeps it waiting, backing off
    attempts = entry.attempts
    WebhookInboxEntry.objects.update(next_attempt_at=timezone.now())
    assert webhook_retry_waiting() == 1
    entry.refresh_from_db()
    assert (entry.status, entry.attempts) == (WebhookStatus.WAITING, attempts + 1)
    assert entry.next_attempt_at > timezone.now()
    assert Order.objects.filter(pk=order_id).count() == 0

    # when the order appears
    order = Order.objects.create(
        id=order_id,
        client=client,
        email=unique_email(),
        status=OrderStatus.PENDING_PAYMENT,
        total=Decimal("20.00"),
        currency="USD",
        expires_at=timezone.now() + timedelta(minutes=15),
    )
    OrderItem.objects.create(
        order=order,
        product=product,
        sku=product.sku,
        name=product.name,
        unit_price=product.price,
        quantity=2,
        line_total=Decimal("20.00"),
    )
    WebhookInboxEntry.objects.update(next_attempt_at=timezone.now())
    assert webhook_retry_waiting() == 1

    # then the kept event is applied, once
    entry.refresh_from_db()
    assert entry.status == WebhookStatus.APPLIED
    order.refresh_from_db()
    assert order.status == OrderStatus.PAID
    assert terminal_events(order.pk) == [("order.paid", 2)]
    assert webhook_retry_waiting() == 0
