"""The stock invariant of SPEC §2 after a mixed run of hundreds of orders through the real
processes: declines, expiries, consumer cancellations, a short outage of the web process
(so successes arrive after their orders expired and are refunded), and a provider that
duplicates and reorders its webhooks.

    stock = initial stock − Σ quantity of its items in orders that are not cancelled

and, once the saga has settled: every paid order has a succeeded payment (and the money at
the provider), every order cancelled after a success has a refund, every order has exactly
one payment at the provider, and the stream holds each order's events in version order.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from catalog.models import Product
from orders.models import CancelReason, Order, OrderStatus
from orders.selectors import order_payment_summaries
from outbox.models import OutboxEvent, OutboxStatus
from payments.models import Payment, PaymentStatus
from tests.factories import make_product
from tests.payments.helpers import (
    events_by_aggregate,
    eventually,
    reserved_by_live_orders,
    stream_events,
    unique_email,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Orders get 3 s to be paid; the provider decides after 0.3 s plus up to 4 s of random
# delivery delay, so some are paid in time and some expire first.
STACK_ENV = {"ORDER_PAYMENT_TIMEOUT": "3", "ORDER_EXPIRY_INTERVAL": "1"}

ORDERS = 200
DECLINE_SHARE = 0.2
CANCEL_SHARE = 0.15
UNSETTLED_PAYMENTS = (
    PaymentStatus.REQUESTING,
    PaymentStatus.PENDING,
    PaymentStatus.CANCEL_REQUESTED,
    PaymentStatus.REFUND_REQUESTED,
    PaymentStatus.REFUND_PENDING,
)


def test_stock_invariant_holds_after_a_mixed_run_of_hundreds_of_orders(stack, provider, shop):
    # given four products, one of them scarce (some orders are refused for stock)
    provider.start(webhook_delay=0.3, duplicate_rate=0.3, out_of_order=4)
    rng = random.Random(20250105)
    initial = {"plenty-a": 1000, "plenty-b": 1000, "plenty-c": 1000, "scarce": 150}
    products = {
        name: make_product(stock=stock, price=Decimal(rng.choice(["4.99", "12.50", "30.00"])))
        for name, stock in initial.items()
    }
    initial_by_pk = {products[name].pk: stock for name, stock in initial.items()}

    def place_and_maybe_cancel(i: int) -> tuple[int, dict | None, str]:
        local = random.Random(i)
        chosen = local.sample(list(products.values()), k=local.randint(1, 3))
        lines = [(product, local.randint(1, 3)) for product in chosen]
        decline = local.random() < DECLINE_SHARE
        response = shop.place(email=unique_email(f"mix{i}", decline=decline), lines=lines)
        if response.status_code != 201:
            assert response.status_code == 409, response.text  # insufficient_stock only
            assert response.json()["code"] == "insufficient_stock"
            return 409, None, ""
        order = response.json()
        cancel = ""
        if local.random() < CANCEL_SHARE:
            # The consumer changes their mind, racing the saga. This only paces the run:
            # either answer is checked against the end state, whoever wins.
            time.sleep(local.uniform(0, 2.5))
            answer = shop.cancel(order["id"])
            assert answer.status_code in (200, 409), answer.text
            cancel = str(answer.status_code)
        return 201, order, cancel

    # when hundreds of orders come in, 8 at a time
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(place_and_maybe_cancel, range(ORDERS)))
    placed_seconds = time.monotonic() - started
    created = [order for status, order, _ in results if status == 201]
    refused = sum(1 for status, _, _ in results if status == 409)
    assert len(created) >= ORDERS * 0.6

    # and the web process is down: webhooks bounce (the provider retries) while the worker
    # expires their orders, so some successes arrive after the expiry. It stays down (at
    # least 5 s, to pace the run) until no order waits for money any more and the provider
    # holds the money of at least one cancelled order, however long the expiry takes on a
    # busy machine: the refunds checked below are owed for such orders.
    stack.processes["web"].stop()
    down_at = time.monotonic()
    outage: dict = {}

    def refund_owed() -> bool:
        outage["pending orders"] = Order.objects.filter(status=OrderStatus.PENDING_PAYMENT).count()
        if outage["pending orders"]:
            return False
        cancelled = {
            str(pk)
            for pk in Order.objects.filter(status=OrderStatus.CANCELLED).values_list(
                "pk", flat=True
            )
        }
        outage["cancelled orders whose money the provider took"] = sum(
            p["order_id"] in cancelled
            and p["status"] in ("succeeded", "refund_pending", "refunded")
            for p in provider.payments()
        )
        return bool(outage["cancelled orders whose money the provider took"])

    eventually(
        refund_owed,
        timeout=30,
        what="no order pending, and a refund owed for a cancelled order",
        alive=[stack.processes["worker"], stack.processes["beat"], provider.process],
        progress=lambda: tuple(outage.values()),
        interval=0.5,
    )
    time.sleep(max(0.0, down_at + 5 - time.monotonic()))
    stack.start_web()
    print(f"web down {time.monotonic() - down_at:.1f}s: {outage}")

    # then the saga settles: no order waits for money, no payment step is owed
    state = {}

    def settled() -> bool:
        state["pending orders"] = Order.objects.filter(status=OrderStatus.PENDING_PAYMENT).count()
        state["unsettled payments"] = dict(
            Counter(
                Payment.objects.filter(status__in=UNSETTLED_PAYMENTS).values_list(
                    "status", flat=True
                )
            )
        )
        state["unpublished events"] = OutboxEvent.objects.exclude(
            status=OutboxStatus.PUBLISHED
        ).count()
        return not (
            state["pending orders"] or state["unsettled payments"] or state["unpublished events"]
        )

    try:
        eventually(settled, timeout=90, what="the saga settled", alive=stack.alive())
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {state}") from None
    assert settled(), state

    orders = {str(order.pk): order for order in Order.objects.all()}
    payments = {str(p.order_id): p for p in Payment.objects.all()}
    assert set(orders) == {order["id"] for order in created}

    # the invariant, for every product
    for product in Product.objects.filter(pk__in=initial_by_pk):
        assert product.stock == initial_by_pk[product.pk] - reserved_by_live_orders(product), (
            product.sku
        )
        assert product.stock >= 0

    # the provider holds exactly one payment per order
    at_provider = defaultdict(list)
    for payment in provider.payments():
        at_provider[payment["order_id"]].append(payment)
    assert set(at_provider) == set(orders)
    assert all(len(found) == 1 for found in at_provider.values())

    refunded = 0
    for order_id, order in orders.items():
        payment = payments[order_id]
        [theirs] = at_provider[order_id]
        assert payment.provider_payment_id == theirs["id"]
        if order.status == OrderStatus.PAID:
            # every paid order has a succeeded payment, and the money is at the provider
            assert payment.status == PaymentStatus.SUCCEEDED, order_id
            assert theirs["status"] == "succeeded", order_id
        else:
            assert order.status == OrderStatus.CANCELLED
            # a cancelled order keeps no money: a success that came too late was refunded
            assert theirs["status"] in ("cancelled", "failed", "refunded"), (order_id, theirs)
            expected = {"cancelled": PaymentStatus.CANCELLED, "failed": PaymentStatus.FAILED}
            assert payment.status == expected.get(theirs["status"], PaymentStatus.REFUNDED), (
                order_id,
                payment.status,
                theirs["status"],
            )
            refunded += theirs["status"] == "refunded"
        # the API shows the same
        shown = order_payment_summaries(order_ids=[order.pk])[order.pk]
        assert shown.status == payment.status
        assert shown.provider_payment_id == payment.provider_payment_id

    # the stream: each order created (v1) then paid or cancelled (v2), once; each refund once
    seen = events_by_aggregate(stream_events(stack.redis_url, stack.stream))
    for order_id, order in orders.items():
        terminal = "order.paid" if order.status == OrderStatus.PAID else "order.cancelled"
        assert seen[order_id] == [("order.created", 1), (terminal, 2)], order_id
    refund_events = [key for key, events in seen.items() if ("payment.refunded", 1) in events]
    assert len(refund_events) == refunded
    assert all(seen[key] == [("payment.refunded", 1)] for key in refund_events)

    # the run was as mixed as intended
    outcomes = Counter(order.cancel_reason or order.status for order in orders.values())
    print(
        f"{len(created)} orders placed in {placed_seconds:.1f}s ({refused} refused for stock); "
        f"outcomes {dict(outcomes)}; {refunded} refunded; "
        f"cancels answered {Counter(c for _, _, c in results if c)}"
    )
    assert outcomes[OrderStatus.PAID] > 0
    assert outcomes[CancelReason.PAYMENT_FAILED] > 0
    assert outcomes[CancelReason.PAYMENT_EXPIRED] > 0
    assert outcomes[CancelReason.CUSTOMER_REQUESTED] > 0
    assert refunded > 0
