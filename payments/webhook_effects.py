"""What each provider event does to the order and its payment, once webhooks.py has
matched it to the order and checked its amount and payment id.

Each effect runs in the transaction that records the webhook in the inbox, with the order
locked (payments/locks.py), and returns the inbox status and note. States never move
backwards: what the order's and the payment's tables do not allow is recorded as ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils import timezone

from orders.models import CancelReason, Order, OrderStatus
from orders.services import InvalidTransition, order_cancel, order_mark_paid, order_mark_refunded
from outbox.services import EventEnvelope, outbox_enqueue
from payments import metrics
from payments.errors import PaymentTransitionLost
from payments.models import Payment, PaymentStatus, WebhookStatus
from payments.nudge import payment_steps_nudge_on_commit
from payments.services import payment_can_move, payment_transition

Effect = Callable[..., tuple[str, str]]

_REFUND_UNDER_WAY = (
    PaymentStatus.REFUND_REQUESTED,
    PaymentStatus.REFUND_PENDING,
    PaymentStatus.REFUNDED,
)


def payment_succeeded_apply(*, order: Order, payment: Payment | None, provider_id: str, event):
    if order.status in (OrderStatus.PAID, OrderStatus.REFUNDED):
        return WebhookStatus.IGNORED, f"order already {order.status}"
    if order.status == OrderStatus.PENDING_PAYMENT:
        if payment is not None and not payment_can_move(payment.status, PaymentStatus.SUCCEEDED):
            return _not_allowed(payment, PaymentStatus.SUCCEEDED, "a success cannot follow it")
        order_mark_paid(order_id=order.pk)
        _payment_move(payment, PaymentStatus.SUCCEEDED, provider_payment_id=provider_id)
        return WebhookStatus.APPLIED, "order paid"
    # Cancelled (by the customer, staff or expiry) before the money arrived: refund it.
    if payment is None:
        return WebhookStatus.IGNORED, "order cancelled and it has no payment to refund"
    if payment.status in _REFUND_UNDER_WAY:
        return WebhookStatus.IGNORED, "refund already under way"
    if not payment_can_move(payment.status, PaymentStatus.REFUND_REQUESTED):
        return _not_allowed(payment, PaymentStatus.REFUND_REQUESTED, "no refund to ask for")
    _payment_move(
        payment,
        PaymentStatus.REFUND_REQUESTED,
        provider_payment_id=provider_id,
        next_attempt_at=timezone.now(),
        attempts=0,
        lease_token=None,
        lease_expires_at=None,
    )
    payment_steps_nudge_on_commit()
    return WebhookStatus.APPLIED, "order was cancelled; refund requested"


def payment_failed_apply(*, order: Order, payment: Payment | None, provider_id: str, event):
    if order.status != OrderStatus.PENDING_PAYMENT:
        # States never move backwards: a failure after a success (or a cancel) is noted only.
        return WebhookStatus.IGNORED, f"order is {order.status}; failure not applied"
    if payment is not None and not payment_can_move(payment.status, PaymentStatus.FAILED):
        return _not_allowed(payment, PaymentStatus.FAILED, "failure not applied")
    try:
        order_cancel(order_id=order.pk, reason=CancelReason.PAYMENT_FAILED)
    except InvalidTransition:
        return WebhookStatus.IGNORED, "order moved on meanwhile"
    if payment is not None:
        # The cancellation's reaction asked for the payment to be stopped, as for any
        # cancelled order whose payment is in flight; the provider's answer is that it
        # failed, which ends it (cancel_requested -> failed). Only written now, after the
        # cancel locked the products: the global lock order puts the payment last.
        payment.refresh_from_db()
    _payment_move(
        payment,
        PaymentStatus.FAILED,
        provider_payment_id=provider_id,
        last_error=str(event["data"].get("failure_reason", ""))[:2000],
    )
    return WebhookStatus.APPLIED, "order cancelled: payment failed"


def refund_succeeded_apply(*, order: Order, payment: Payment | None, provider_id: str, event):
    if payment is None:
        return WebhookStatus.IGNORED, "the order has no payment to refund"
    if payment.status == PaymentStatus.REFUNDED:
        return WebhookStatus.IGNORED, "already refunded"
    if not payment_can_move(payment.status, PaymentStatus.REFUNDED):
        return _not_allowed(
            payment, PaymentStatus.REFUNDED, "a refund applies only to a payment that succeeded"
        )
    version = payment.event_version + 1
    _payment_move(
        payment,
        PaymentStatus.REFUNDED,
        event_version=version,
        lease_token=None,
        lease_expires_at=None,
    )
    outbox_enqueue(event=_payment_refunded_event(payment, order=order, provider_id=provider_id))
    metrics.REFUNDS.labels(stage="completed").inc()
    if order.status == OrderStatus.PAID:
        # The provider refunded the money of a paid order (SPEC §2): the order is refunded
        # too; no stock comes back by itself (the goods may have shipped).
        order_mark_refunded(order_id=order.pk)
        return WebhookStatus.APPLIED, "payment and order refunded"
    return WebhookStatus.APPLIED, "refunded"


EFFECTS: dict[str, Effect] = {
    "payment.succeeded": payment_succeeded_apply,
    "payment.failed": payment_failed_apply,
    "refund.succeeded": refund_succeeded_apply,
}


def _payment_refunded_event(payment: Payment, *, order: Order, provider_id: str) -> EventEnvelope:
    return EventEnvelope(
        type="payment.refunded",
        schema_version=1,
        aggregate_type="payment",
        aggregate_id=str(payment.pk),
        version=payment.event_version,
        payload={
            "payment_id": str(payment.pk),
            "provider_payment_id": payment.provider_payment_id or provider_id,
            "order_id": str(order.pk),
            "amount": str(payment.amount),
            "currency": payment.currency,
        },
    )


def _payment_move(payment: Payment | None, to: str, **changes: Any) -> None:
    """Move the order's payment, if it has one.

    The order's lock is held (every status writer takes it) and the move was checked
    against the table first, so the conditional update wins; if it ever does not, the
    caller's savepoint is rolled back (PaymentTransitionLost).
    """
    if payment is not None and not payment_transition(payment=payment, to=to, **changes):
        raise PaymentTransitionLost(f"payment {payment.pk} moved before {to} was applied")


def _not_allowed(payment: Payment, to: str, why: str) -> tuple[str, str]:
    return WebhookStatus.IGNORED, f"payment is {payment.status}; {why} ({to} not allowed)"
