"""Expiry of unpaid orders and refunds of late successes, with the real processes (SPEC §5).

This stack gives orders a 2 s payment deadline (ORDER_PAYMENT_TIMEOUT, read by the web
process at creation) and runs the expiry beat task every second. The fake provider would
decide a payment only after an hour here: it decides when the test lets it, by restarting
it on its state file (a restart delivers every outcome it still owes at once). No test
depends on how soon the expiry comes on a busy machine, only on the order of events.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.models import Product
from orders.models import CancelReason, OrderStatus
from payments.models import Payment, PaymentStatus, WebhookInboxEntry, WebhookStatus
from tests.factories import make_product
from tests.payments.helpers import (
    events_by_aggregate,
    eventually,
    order_status,
    stream_events,
    unique_email,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

STACK_ENV = {"ORDER_PAYMENT_TIMEOUT": "2", "ORDER_EXPIRY_INTERVAL": "1"}

EXPIRED = (OrderStatus.CANCELLED, CancelReason.PAYMENT_EXPIRED)

# Longer than any test here: the provider decides only once restarted.
UNDECIDED = 3600


def _payment(order_id) -> Payment:
    return Payment.objects.get(order_id=order_id)


def _owed_deliveries(provider, provider_payment_id: str) -> list[dict]:
    """The deliveries (outcomes, refunds, webhooks) the provider still owes for a payment,
    as its state file records them: an outcome leaves this list once decided, a webhook
    once our service answered it 2xx."""
    state = json.loads(provider.state_file.read_text())
    return [d for d in state["deliveries"] if d["payment_id"] == provider_payment_id]


def test_unpaid_order_past_its_deadline_is_cancelled_and_its_payment_cancelled(
    stack, provider, shop
):
    # given a provider that does not decide until the test lets it
    provider.start(webhook_delay=UNDECIDED)
    product = make_product(stock=5)

    # when an order is placed and nobody pays within its 2 s
    order = shop.place_ok(email=unique_email(), lines=[(product, 2)])
    assert Product.objects.get(pk=product.pk).stock == 3

    # then the expiry task cancels it and gives the units back
    eventually(
        lambda: order_status(order["id"]) == EXPIRED,
        timeout=20,
        what="the order expired",
        alive=stack.alive(),
    )
    assert Product.objects.get(pk=product.pk).stock == 5
    # and the saga cancels the payment at the provider
    eventually(
        lambda: _payment(order["id"]).status == PaymentStatus.CANCELLED,
        timeout=20,
        what="our payment cancelled",
        alive=stack.alive(),
    )
    [at_provider] = provider.payments(order["id"])
    assert at_provider["status"] == "cancelled"
    assert _payment(order["id"]).provider_payment_id == at_provider["id"]
    assert shop.get(order["id"])["payment"] == {
        "status": "cancelled",
        "provider_payment_id": at_provider["id"],
    }

    # and once the provider decides the payment it still owed an outcome...
    [owed] = _owed_deliveries(provider, at_provider["id"])
    assert owed["kind"] == "outcome"
    provider.stop()
    provider.start(webhook_delay=UNDECIDED)  # on its state file: owed outcomes are due now
    eventually(
        lambda: _owed_deliveries(provider, at_provider["id"]) == [],
        timeout=10,
        what="the provider deciding the cancelled payment",
        alive=[*stack.alive(), provider.process],
    )
    # ...it has had nothing to tell us: a cancelled payment has no outcome
    [at_provider] = provider.payments(order["id"])
    assert at_provider["status"] == "cancelled"
    assert not WebhookInboxEntry.objects.exists()
    assert order_status(order["id"]) == EXPIRED
    assert Product.objects.get(pk=product.pk).stock == 5

    seen = eventually(
        lambda: (
            (s := events_by_aggregate(stream_events(stack.redis_url, stack.stream)))
            and len(s[order["id"]]) == 2
            and s
        ),
        timeout=20,
        what="the order's events in the stream",
    )
    assert seen[order["id"]] == [("order.created", 1), ("order.cancelled", 2)]


def test_success_arriving_after_the_expiry_is_refunded_and_the_order_stays_cancelled(
    stack, provider, shop
):
    # given an order whose payment exists at the provider, not decided yet...
    provider.start(webhook_delay=UNDECIDED)
    product = make_product(stock=5)
    order = shop.place_ok(email=unique_email(), lines=[(product, 2)])
    eventually(
        lambda: _payment(order["id"]).status == PaymentStatus.PENDING,
        timeout=20,
        what="the payment created at the provider",
        alive=stack.alive(),
    )
    # ...and a provider that crashes before it decides, so our cancel cannot reach it
    provider.kill()
    eventually(
        lambda: order_status(order["id"]) == EXPIRED,
        timeout=20,
        what="the order expired",
        alive=stack.alive(),
    )
    eventually(
        lambda: (
            (p := _payment(order["id"])).status == PaymentStatus.CANCEL_REQUESTED
            and "ConnectionError" in p.last_error
        ),
        timeout=20,
        what="the cancel step failing against the dead provider",
        alive=stack.alive(),
    )
    assert Product.objects.get(pk=product.pk).stock == 5

    # when the provider comes back, deciding the payment it owed an outcome (success) as it
    # starts, and our cancel arrives after that, too late: it is answered 409
    # payment_succeeded, or the success webhook gets here first. (The retry is held back
    # until the provider has decided, however long its start takes.)
    eventually(
        lambda: Payment.objects.filter(
            order_id=order["id"],
            status=PaymentStatus.CANCEL_REQUESTED,
            lease_token__isnull=True,
        ).update(next_attempt_at=timezone.now() + timedelta(seconds=UNDECIDED)),
        timeout=10,
        what="the cancel step between two attempts",
        interval=0.01,
    )
    provider.start(webhook_delay=0.3)
    eventually(
        lambda: provider.payments(order["id"])[0]["status"] != "pending",
        timeout=10,
        what="the restarted provider deciding the payment",
        alive=[*stack.alive(), provider.process],
    )
    Payment.objects.filter(order_id=order["id"], status=PaymentStatus.CANCEL_REQUESTED).update(
        next_attempt_at=timezone.now()
    )

    # then the money goes back, and the order stays cancelled with its stock restored
    eventually(
        lambda: _payment(order["id"]).status == PaymentStatus.REFUNDED,
        timeout=30,
        what="the payment refunded",
        alive=stack.alive(),
    )
    [at_provider] = provider.payments(order["id"])
    assert at_provider["status"] == "refunded"
    assert order_status(order["id"]) == EXPIRED
    assert Product.objects.get(pk=product.pk).stock == 5
    body = shop.get(order["id"])
    assert body["status"] == "cancelled"
    assert body["payment"] == {"status": "refunded", "provider_payment_id": at_provider["id"]}
    inbox = dict(WebhookInboxEntry.objects.values_list("event_type", "status"))
    assert inbox["refund.succeeded"] == WebhookStatus.APPLIED

    # the stream tells consumers: the order was created and cancelled, never paid, and the
    # payment was refunded
    payment = _payment(order["id"])

    def refund_published():
        seen = events_by_aggregate(stream_events(stack.redis_url, stack.stream))
        return seen if seen[str(payment.pk)] else None

    seen = eventually(refund_published, timeout=20, what="payment.refunded in the stream")
    assert seen[str(payment.pk)] == [("payment.refunded", 1)]
    assert seen[order["id"]] == [("order.created", 1), ("order.cancelled", 2)]
    [refunded] = [
        e for e in stream_events(stack.redis_url, stack.stream) if e["type"] == "payment.refunded"
    ]
    assert refunded["payload"]["order_id"] == order["id"]
    assert refunded["payload"]["provider_payment_id"] == at_provider["id"]
