"""The payment saga end to end, with every part real: orders placed over HTTP at gunicorn,
the fake provider as its own process calling the webhook back over HTTP, a Celery worker and
beat running the saga steps and the outbox relay, PostgreSQL and Redis (SPEC §5).

Also the provider's technical failures: 5xx answers, a provider that is down (killed and
restarted on the same port with its state file) and answers slower than our timeout. None of
them cancels an order; each order ends paid, with exactly one payment at the provider.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import requests

from catalog.models import Product
from orders.models import CancelReason, OrderStatus
from payments.models import Payment, PaymentStatus
from tests.factories import make_product
from tests.payments.helpers import (
    events_by_aggregate,
    eventually,
    order_status,
    stream_events,
    unique_email,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# A long payment deadline (nothing expires here) and a 1 s client timeout (the slow-provider
# test answers in 1.5 s).
STACK_ENV = {"ORDER_PAYMENT_TIMEOUT": "900", "PAYMENT_PROVIDER_TIMEOUT": "1"}


def _stock(product) -> int:
    return Product.objects.get(pk=product.pk).stock


def _payment(order_id) -> Payment:
    return Payment.objects.get(order_id=order_id)


def test_normal_email_is_paid_and_decline_is_cancelled_with_stock_restored(stack, provider, shop):
    # given
    provider.start(webhook_delay=0.3)
    product = make_product(stock=10, price=Decimal("12.50"))

    # when
    paid = shop.place_ok(email=unique_email("alice"), lines=[(product, 2)])
    declined = shop.place_ok(email=unique_email("bob", decline=True), lines=[(product, 3)])
    assert paid["status"] == declined["status"] == "pending_payment"
    assert _stock(product) == 5  # both reserved

    # then: the saga settles both, with no person involved
    eventually(
        lambda: order_status(paid["id"]) == (OrderStatus.PAID, ""),
        timeout=30,
        what="the normal order paid",
        alive=stack.alive(),
    )
    eventually(
        lambda: (
            order_status(declined["id"]) == (OrderStatus.CANCELLED, CancelReason.PAYMENT_FAILED)
        ),
        timeout=30,
        what="the declined order cancelled (payment_failed)",
        alive=stack.alive(),
    )
    assert _stock(product) == 8  # the declined order's 3 units are back, exactly once

    # the provider holds exactly one payment per order, in the state our rows say
    [at_provider_paid] = provider.payments(paid["id"])
    [at_provider_declined] = provider.payments(declined["id"])
    assert at_provider_paid["status"] == "succeeded"
    assert at_provider_declined["status"] == "failed"
    assert at_provider_paid["amount"] == "25.00"
    payment = _payment(paid["id"])
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.provider_payment_id == at_provider_paid["id"]
    assert _payment(declined["id"]).status == PaymentStatus.FAILED

    # the API's payment field shows the saga's view
    assert shop.get(paid["id"])["payment"] == {
        "status": "succeeded",
        "provider_payment_id": at_provider_paid["id"],
    }
    body = shop.get(declined["id"])
    assert body["status"] == "cancelled"
    assert body["cancel_reason"] == "payment_failed"
    assert body["payment"] == {
        "status": "failed",
        "provider_payment_id": at_provider_declined["id"],
    }

    # and the events reached the stream, each order's in version order
    def both_terminal_events_published():
        seen = events_by_aggregate(stream_events(stack.redis_url, stack.stream))
        return seen if len(seen[paid["id"]]) == 2 and len(seen[declined["id"]]) == 2 else None

    seen = eventually(
        both_terminal_events_published, timeout=20, what="both orders' events in the stream"
    )
    assert seen[paid["id"]] == [("order.created", 1), ("order.paid", 2)]
    assert seen[declined["id"]] == [("order.created", 1), ("order.cancelled", 2)]
    cancelled = [
        e
        for e in stream_events(stack.redis_url, stack.stream)
        if e["aggregate_id"] == declined["id"] and e["type"] == "order.cancelled"
    ]
    assert cancelled[0]["payload"]["reason"] == "payment_failed"


def test_provider_answering_5xx_delays_the_payment_but_never_cancels(stack, provider, shop):
    # given a provider that fails every create with 503
    provider.start(webhook_delay=0.3, error_rate=1)
    product = make_product(stock=5)

    # when
    order = shop.place_ok(email=unique_email(), lines=[(product, 1)])

    # then: the step is retried with backoff, the error recorded, the order left waiting
    eventually(
        lambda: _payment(order["id"]).attempts >= 3,
        timeout=30,
        what="three create attempts",
        alive=stack.alive(),
    )
    payment = _payment(order["id"])
    assert payment.status == PaymentStatus.REQUESTING
    assert "503" in payment.last_error
    assert payment.provider_payment_id is None
    assert order_status(order["id"]) == (OrderStatus.PENDING_PAYMENT, "")
    assert _stock(product) == 4
    assert provider.payments(order["id"]) == []

    # when the provider recovers
    provider.chaos(error_rate=0)

    # then the order is paid, with one payment at the provider
    eventually(
        lambda: order_status(order["id"])[0] == OrderStatus.PAID,
        timeout=30,
        what="the order paid once the provider is back",
        alive=stack.alive(),
    )
    assert len(provider.payments(order["id"])) == 1
    payment = _payment(order["id"])
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.last_error == ""
    assert _stock(product) == 4


def test_provider_down_then_back_on_the_same_state_pays_every_order_once(stack, provider, shop):
    # given: order A's payment is created at the provider, its webhook not sent yet
    provider.start(webhook_delay=3)
    product = make_product(stock=5)
    order_a = shop.place_ok(email=unique_email("a"), lines=[(product, 1)])
    eventually(
        lambda: _payment(order_a["id"]).status == PaymentStatus.PENDING,
        timeout=20,
        what="A's payment created at the provider",
        alive=stack.alive(),
    )

    # when the provider crashes (SIGKILL) and order B comes in meanwhile
    provider.kill()
    order_b = shop.place_ok(email=unique_email("b"), lines=[(product, 2)])

    # then B's request is retried, A waits for its webhook; nobody is cancelled
    eventually(
        lambda: _payment(order_b["id"]).attempts >= 2,
        timeout=30,
        what="B's create retried while the provider is down",
        alive=stack.alive(),
    )
    payment_b = _payment(order_b["id"])
    assert payment_b.status == PaymentStatus.REQUESTING
    assert "ConnectionError" in payment_b.last_error
    assert order_status(order_a["id"]) == (OrderStatus.PENDING_PAYMENT, "")
    assert order_status(order_b["id"]) == (OrderStatus.PENDING_PAYMENT, "")
    assert _stock(product) == 2

    # when the provider comes back on the same port with the same state file
    provider.start(webhook_delay=0.3)

    # then A's webhook (kept in the provider's state) and B's payment both arrive
    for order in (order_a, order_b):
        eventually(
            lambda order=order: order_status(order["id"])[0] == OrderStatus.PAID,
            timeout=30,
            what=f"order {order['id']} paid after the outage",
            alive=stack.alive(),
        )
        assert len(provider.payments(order["id"])) == 1
    assert _stock(product) == 2


def test_answers_slower_than_the_timeout_are_retried_under_one_idempotency_key(
    stack, provider, shop
):
    # given a provider slower (1.5 s) than our client's timeout (PAYMENT_PROVIDER_TIMEOUT=1
    # for this stack): every create "fails" on our side but happens at the provider
    provider.start(webhook_delay=4)
    provider.chaos(latency=1.5)  # after start: its health check would be slow too
    product = make_product(stock=5)

    # when
    order = shop.place_ok(email=unique_email(), lines=[(product, 1)])

    # then the step is retried...
    eventually(
        lambda: _payment(order["id"]).attempts >= 2,
        timeout=30,
        what="the create retried after timeouts",
        alive=stack.alive(),
    )
    assert "Timeout" in _payment(order["id"]).last_error
    # ...the provider's webhook pays the order, and the retries made no second payment
    eventually(
        lambda: order_status(order["id"])[0] == OrderStatus.PAID,
        timeout=30,
        what="the order paid",
        alive=stack.alive(),
    )
    provider.chaos(latency=0)
    [at_provider] = provider.payments(order["id"])
    eventually(
        lambda: _payment(order["id"]).provider_payment_id == at_provider["id"],
        timeout=10,
        what="our payment row naming the provider's payment",
    )
    assert _payment(order["id"]).status == PaymentStatus.SUCCEEDED


def test_a_refund_at_the_provider_refunds_the_paid_order(stack, provider, shop):
    # given an order paid through the provider
    provider.start(webhook_delay=0.3)
    product = make_product(stock=5, price=Decimal("8.00"))
    order = shop.place_ok(email=unique_email(), lines=[(product, 2)])
    eventually(
        lambda: order_status(order["id"]) == (OrderStatus.PAID, ""),
        timeout=30,
        what="the order paid",
        alive=stack.alive(),
    )
    [at_provider] = provider.payments(order["id"])
    payment = _payment(order["id"])
    assert payment.provider_payment_id == at_provider["id"]

    # when the provider is asked to refund that payment (as staff would, at the provider)
    response = requests.post(f"{provider.url}/v1/payments/{at_provider['id']}/refund", timeout=5)
    assert response.status_code == 200, response.text

    # then its refund.succeeded webhook refunds the payment and the order (SPEC §2)
    eventually(
        lambda: order_status(order["id"]) == (OrderStatus.REFUNDED, ""),
        timeout=30,
        what="the order refunded",
        alive=stack.alive(),
    )
    assert _payment(order["id"]).status == PaymentStatus.REFUNDED
    assert _stock(product) == 3  # a refund restores no stock by itself
    assert shop.get(order["id"])["status"] == "refunded"
    assert shop.get(order["id"])["payment"]["status"] == "refunded"

    # and both events reach the stream, the order's in version order
    def refund_events_published():
        seen = events_by_aggregate(stream_events(stack.redis_url, stack.stream))
        done = len(seen[order["id"]]) == 3 and seen[str(payment.pk)]
        return seen if done else None

    seen = eventually(refund_events_published, timeout=20, what="the refund events in the stream")
    assert seen[order["id"]] == [("order.created", 1), ("order.paid", 2), ("order.refunded", 3)]
    assert seen[str(payment.pk)] == [("payment.refunded", 1)]
    assert provider.payments(order["id"])[0]["status"] == "refunded"
