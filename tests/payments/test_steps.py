"""The saga's outbound steps against the fake provider's HTTP server run in this process, so
each race is placed exactly: a cancel that reaches the provider after it decided.

The provider's webhooks go to a closed port here (they are retried there, never delivered):
the steps alone are under test.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from http.server import ThreadingHTTPServer

import pytest
import requests

import payments.locks
from catalog.models import Product
from orders.models import CancelReason, OrderStatus
from orders.services import OrderLine, order_cancel, order_create
from payments.fake_provider import FakeProvider, ProviderConfig
from payments.fake_provider_http import make_handler
from payments.models import Payment, PaymentStatus
from payments.steps import payment_steps_run
from scripts.servers import free_port
from tests.factories import make_api_client, make_product
from tests.payments.helpers import (
    PROVIDER_TOKEN,
    WEBHOOK_SECRET,
    eventually,
    provider_auth,
    unique_email,
)

pytestmark = pytest.mark.django_db(transaction=True)  # the provider is called outside any


@pytest.fixture
def fake_provider(settings):
    provider = FakeProvider(
        ProviderConfig(
            webhook_url=f"http://127.0.0.1:{free_port()}/nobody-listens",
            webhook_secret=WEBHOOK_SECRET,
            webhook_delay=0,  # decides at once
            token=PROVIDER_TOKEN,
        )
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(provider))
    server.daemon_threads = True
    threads = [
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True),
        threading.Thread(target=provider.run_deliveries, daemon=True),
    ]
    for thread in threads:
        thread.start()
    settings.PAYMENT_PROVIDER_URL = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield provider
    finally:
        provider.stop()
        server.shutdown()
        server.server_close()


def _provider_status(provider: FakeProvider, payment: Payment) -> str:
    with provider.lock:
        return provider.payments[payment.provider_payment_id]["status"]


def _order_whose_payment_the_provider_decided(provider, *, decline: bool, outcome: str):
    client, _ = make_api_client()
    product = make_product(stock=10, price=Decimal("15.00"))
    order = order_create(
        client=client,
        email=unique_email(decline=decline),
        lines=[OrderLine(product_id=product.pk, quantity=4)],
    )
    assert payment_steps_run().succeeded == 1  # the create step
    payment = Payment.objects.get(order_id=order.pk)
    assert payment.status == PaymentStatus.PENDING
    eventually(
        lambda: _provider_status(provider, payment) == outcome,
        timeout=5,
        what=f"the provider deciding {outcome}",
    )
    return order, product, payment


def test_a_cancel_that_arrives_after_the_success_turns_into_a_refund(fake_provider):
    # given a payment the provider has already taken (its webhook not here yet)
    order, product, payment = _order_whose_payment_the_provider_decided(
        fake_provider, decline=False, outcome="succeeded"
    )

    # when the customer cancels and the saga asks the provider to cancel the payment
    order_cancel(order_id=order.pk, reason=CancelReason.CUSTOMER_REQUESTED)
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.CANCEL_REQUESTED
    payment_steps_run()

    # then the provider's "too late" (409 payment_succeeded) becomes a refund request...
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REFUND_REQUESTED
    # ...which the next step sends, and the provider accepts
    payment_steps_run()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REFUND_PENDING
    assert _provider_status(fake_provider, payment) in ("refund_pending", "refunded")
    order.refresh_from_db()
    assert (order.status, order.cancel_reason) == (
        OrderStatus.CANCELLED,
        CancelReason.CUSTOMER_REQUESTED,
    )
    assert Product.objects.get(pk=product.pk).stock == 10


def test_a_cancel_that_arrives_after_a_decline_settles_the_payment_as_failed(fake_provider):
    # given a payment the provider has already declined (its webhook not here yet)
    order, product, payment = _order_whose_payment_the_provider_decided(
        fake_provider, decline=True, outcome="failed"
    )

    # when the order expires first and the saga asks the provider to cancel the payment
    order_cancel(order_id=order.pk, reason=CancelReason.PAYMENT_EXPIRED)
    payment_steps_run()

    # then the provider's 409 payment_failed settles it: no money moved, nothing more owed
    # (before the fix the step was retried every 30 s for ever, in cancel_requested)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.FAILED
    assert payment.lease_token is None
    assert payment_steps_run().claimed == 0
    assert _provider_status(fake_provider, payment) == "failed"
    assert Product.objects.get(pk=product.pk).stock == 10


def test_one_create_per_order_however_often_the_step_is_retried(fake_provider, settings):
    # given an order whose create step is retried (the answer lost, say) three times
    client, _ = make_api_client()
    product = make_product(stock=10)
    order = order_create(
        client=client, email=unique_email(), lines=[OrderLine(product_id=product.pk, quantity=1)]
    )
    for _ in range(3):
        Payment.objects.filter(order_id=order.pk).update(status=PaymentStatus.REQUESTING)
        payment_steps_run()

    # then the provider holds one payment for the order
    listed = requests.get(
        f"{settings.PAYMENT_PROVIDER_URL}/v1/payments?order_id={order.pk}",
        headers=provider_auth(),
        timeout=5,
    ).json()["results"]
    assert len(listed) == 1
    assert Payment.objects.get(order_id=order.pk).provider_payment_id == listed[0]["id"]


def test_a_payment_settled_between_its_claim_and_its_step_is_released(monkeypatch):
    # given a payment owed a create step, which a success webhook settles right after the
    # step runner claimed it (simulated: the claim itself sets the status)
    client, _ = make_api_client()
    product = make_product(stock=10)
    order = order_create(
        client=client, email=unique_email(), lines=[OrderLine(product_id=product.pk, quantity=1)]
    )
    monkeypatch.setattr(
        payments.locks.PAYMENT_STEP_WORK,
        "claim_sql",
        payments.locks.PAYMENT_STEP_WORK.claim_sql.replace(
            "attempts = claimed.attempts + 1",
            "attempts = claimed.attempts + 1, status = 'succeeded'",
        ),
    )

    # when the runner goes on with what it claimed
    report = payment_steps_run()

    # then it owes nothing for that payment and lets go of it (before the fix: KeyError,
    # the rest of the batch left leased until the lease ran out)
    assert report.claimed == 1
    payment = Payment.objects.get(order_id=order.pk)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.lease_token is None
