"""Writes of the payment saga (SPEC §5).

The saga is driven by rows, not by messages: reacting to an order event records what is
owed to the provider (a payment to request, cancel or refund) in the order's own
transaction; `payment_steps_run` (a Celery task, on beat and nudged on commit) then
claims due rows with a lease, calls the provider with no transaction open, and records the
answer. Technical failures back off and retry; they never cancel an order. Webhooks are
applied once each, in the transaction that records them in the inbox.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from orders.errors import OrderNotFound
from orders.models import CancelReason, OrderStatus
from orders.services import (
    InvalidTransition,
    order_cancel,
    order_mark_paid,
    order_mark_refunded,
    order_payment_summary_set,
)
from outbox.services import EventEnvelope, outbox_enqueue
from payments import metrics
from payments.locks import (
    claim_due_payments,
    lock_order_and_payment,
    lock_order_read_payment,
    lock_waiting_webhook,
)
from payments.models import (
    OUTBOUND_STATUSES,
    PAYMENT_TRANSITIONS,
    Payment,
    PaymentStatus,
    WebhookInboxEntry,
    WebhookStatus,
)
from payments.nudge import payment_steps_nudge_on_commit
from payments.provider import (
    ProviderRejected,
    ProviderUnavailable,
    provider_cancel_payment,
    provider_create_payment,
    provider_refund_payment,
)

logger = logging.getLogger(__name__)

# Payment statuses from which an order cancellation still has to stop the payment.
_CANCELLABLE = (PaymentStatus.REQUESTING, PaymentStatus.PENDING)


# --- the payment state machine -----------------------------------------------------------


class PaymentTransitionNotAllowed(Exception):
    """A move PAYMENT_TRANSITIONS does not allow: refused, never applied."""

    def __init__(self, payment_id: UUID, current: str, target: str) -> None:
        super().__init__(f"payment {payment_id}: {current} -> {target} is not allowed")
        self.current = current
        self.target = target


class PaymentTransitionLost(Exception):
    """The payment was no longer in the status the caller read: someone else moved it."""


class ProviderPaymentIdTaken(Exception):
    """The provider's payment id already belongs to another order's payment."""

    def __init__(self, provider_payment_id: str, owner_order_id: UUID | None) -> None:
        owner = f"order {owner_order_id}" if owner_order_id else "another order"
        super().__init__(f"provider payment id {provider_payment_id!r} already belongs to {owner}")
        self.provider_payment_id = provider_payment_id
        self.owner_order_id = owner_order_id


def payment_can_move(current: str, target: str) -> bool:
    return target in PAYMENT_TRANSITIONS.get(current, frozenset())


def provider_payment_id_owner(*, provider_payment_id: str, order_id: UUID) -> UUID | None:
    """The order, other than `order_id`, whose payment holds this provider id (or None)."""
    return (
        Payment.objects.filter(provider_payment_id=provider_payment_id)
        .exclude(order_id=order_id)
        .values_list("order_id", flat=True)
        .first()
    )


def payment_transition(*, payment: Payment, to: str, **changes: Any) -> bool:
    """The one place a payment's status changes: an UPDATE on the status the caller read.

    Only moves of PAYMENT_TRANSITIONS are made (PaymentTransitionNotAllowed otherwise).
    Returns whether this call won: False when the payment had moved meanwhile (the row
    count decides). A provider id already bound to another payment raises
    ProviderPaymentIdTaken and changes nothing. On success `payment` is updated in memory.
    """
    current = payment.status
    if not payment_can_move(current, to):
        raise PaymentTransitionNotAllowed(payment.pk, current, to)
    won = _payment_write(payment=payment, expected=current, changes={"status": to, **changes}) == 1
    if won:
        metrics.PAYMENT_TRANSITIONS.labels(from_status=current, to_status=to).inc()
        for name, value in changes.items():
            setattr(payment, name, value)
        payment.status = to
    return won


def _payment_write(*, payment: Payment, expected: str | None, changes: dict[str, Any]) -> int:
    """UPDATE one payment row (WHERE status = expected, given one); returns the row count.

    provider_payment_id is unique: a value another payment holds is refused before the
    write, and a racing writer of the same value fails only this statement's savepoint, so
    neither ever surfaces as an IntegrityError (a 500 the provider would retry for ever).
    """
    provider_id = changes.get("provider_payment_id")
    if provider_id:
        owner = provider_payment_id_owner(
            provider_payment_id=provider_id, order_id=payment.order_id
        )
        if owner is not None:
            raise ProviderPaymentIdTaken(provider_id, owner)
    rows = Payment.objects.filter(pk=payment.pk)
    if expected is not None:
        rows = rows.filter(status=expected)
    try:
        with transaction.atomic():
            return rows.update(updated_at=timezone.now(), **changes)
    except IntegrityError as exc:
        constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", "") or ""
        if provider_id and "provider_payment_id" in constraint:
            raise ProviderPaymentIdTaken(provider_id, None) from exc
        raise


def provider_idempotency_key(order_id: UUID) -> str:
    """One provider payment per order, however often the request step is retried."""
    return f"order-{order_id}"


# --- reactions to order events (run inside the order's transaction) ----------------------


def payment_open_for_order(event: EventEnvelope) -> None:
    """order.created: owe the provider a payment request for the order total."""
    payload = event.payload
    Payment.objects.create(
        order_id=payload["order_id"],
        status=PaymentStatus.REQUESTING,
        amount=Decimal(payload["total"]),
        currency=payload["currency"],
        email=payload["email"],
        next_attempt_at=timezone.now(),
    )
    # The order's `payment` summary stays null until the provider has the payment: one
    # statement less while order creation holds its product locks.
    payment_steps_nudge_on_commit()


def payment_stop_for_cancelled_order(event: EventEnvelope) -> None:
    """order.cancelled: a payment still in flight must be cancelled at the provider.

    A cancellation *because* the payment failed needs nothing: the webhook that caused it
    marks the payment failed itself.
    """
    if event.payload.get("reason") == CancelReason.PAYMENT_FAILED:
        return
    payment = Payment.objects.filter(order_id=event.payload["order_id"]).first()
    if payment is None or payment.status not in _CANCELLABLE:
        return
    # The order's row lock is held (order_cancel): webhooks and saga steps, which lock the
    # order first, cannot move the payment meanwhile; the conditional update says so anyway.
    if payment_transition(
        payment=payment,
        to=PaymentStatus.CANCEL_REQUESTED,
        next_attempt_at=timezone.now(),
        attempts=0,
    ):
        order_payment_summary_set(
            order_id=event.payload["order_id"], payment_status=PaymentStatus.CANCEL_REQUESTED
        )
        payment_steps_nudge_on_commit()


# --- outbound steps: claim, call the provider, record ------------------------------------


@dataclass
class StepsReport:
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0


def payment_steps_run(*, limit: int = 50) -> StepsReport:
    """Work every payment step that is due: request, cancel or refund at the provider."""
    token = uuid.uuid4()
    ids = claim_due_payments(
        statuses=[str(status) for status in OUTBOUND_STATUSES],
        limit=limit,
        token=token,
        lease_seconds=settings.PAYMENT_STEP_LEASE_SECONDS,
    )
    report = StepsReport(claimed=len(ids))
    for payment in Payment.objects.filter(pk__in=ids).order_by("next_attempt_at"):
        step = payment.status
        if step not in _STEPS:
            # A webhook settled the payment between the claim and this read (e.g. the
            # success of a request still in flight): nothing is owed any more.
            _release(payment=payment, token=token)
            continue
        try:
            _STEPS[step](payment, token)
        except ProviderUnavailable as exc:
            _record_retry(payment=payment, token=token, error=str(exc))
            metrics.SAGA_STEPS.labels(step=step, outcome="retry").inc()
            report.retried += 1
            continue
        except ProviderRejected as exc:
            # The provider refused our request as such: retrying as-is will not help, but a
            # refusal must not cancel the order either; staff see it, expiry settles it.
            _record_retry(payment=payment, token=token, error=f"rejected: {exc}", slow=True)
            metrics.SAGA_STEPS.labels(step=step, outcome="rejected").inc()
            logger.error(
                "provider rejected a saga step",
                extra={"payment_id": str(payment.pk), "step": step, "error": str(exc)},
            )
            continue
        except ProviderPaymentIdTaken as exc:
            # The provider answered with a payment id we hold for another order: recording
            # it would break the one-payment-per-id rule, so nothing is recorded; staff see
            # it on the payment, and the step is retried slowly.
            _record_retry(payment=payment, token=token, error=str(exc), slow=True)
            metrics.SAGA_STEPS.labels(step=step, outcome="payment_id_taken").inc()
            logger.error(
                "provider answered with a payment id bound to another order",
                extra={"payment_id": str(payment.pk), "step": step, "error": str(exc)},
            )
            continue
        except Exception as exc:
            # A bug or an unexpected answer must not hold the rest of the batch until the
            # lease ends: record it on this payment, retry slowly, and carry on.
            logger.exception(
                "saga step failed", extra={"payment_id": str(payment.pk), "step": step}
            )
            _record_retry(
                payment=payment, token=token, error=f"{type(exc).__name__}: {exc}", slow=True
            )
            metrics.SAGA_STEPS.labels(step=step, outcome="error").inc()
            continue
        metrics.SAGA_STEPS.labels(step=step, outcome="ok").inc()
        report.succeeded += 1
    return report


def _backoff(attempt: int, *, slow: bool = False) -> timedelta:
    schedule = settings.PAYMENT_RETRY_BACKOFF
    base = schedule[-1] if slow else schedule[min(attempt, len(schedule)) - 1]
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


def _release(*, payment: Payment, token: UUID) -> None:
    Payment.objects.filter(pk=payment.pk, lease_token=token).update(
        lease_token=None, lease_expires_at=None
    )


def _record_retry(*, payment: Payment, token: UUID, error: str, slow: bool = False) -> None:
    Payment.objects.filter(pk=payment.pk, lease_token=token).update(
        lease_token=None,
        lease_expires_at=None,
        last_error=error[:2000],
        next_attempt_at=timezone.now() + _backoff(payment.attempts, slow=slow),
        updated_at=timezone.now(),
    )


def _finish_step(*, payment: Payment, token: UUID, expected: str, changes: dict) -> bool:
    """Record a step's answer if the payment is still where the step left it.

    Locks the order then the payment (payments/locks.py order). Returns False when the
    payment moved meanwhile (a webhook or a cancellation won): the answer is then kept only
    as far as it is still true (the provider id). `changes` holds the new status. Raises
    ProviderPaymentIdTaken (nothing recorded) when the provider's id is another order's.
    """
    changes = dict(changes)
    target = changes.pop("status")
    provider_id = changes.get("provider_payment_id")
    with transaction.atomic():
        _, locked = lock_order_and_payment(order_id=payment.order_id)
        if locked is None or locked.lease_token != token:
            return False  # our lease expired and someone else owns the step now
        base: dict[str, Any] = {"lease_token": None, "lease_expires_at": None, "last_error": ""}
        if locked.status != expected:
            if provider_id and not locked.provider_payment_id:
                base["provider_payment_id"] = provider_id
            _payment_write(payment=locked, expected=None, changes=base)
            if "provider_payment_id" in base:
                order_payment_summary_set(order_id=locked.order_id, provider_payment_id=provider_id)
            return False
        # Under the payment's row lock: the conditional update cannot lose.
        if not payment_transition(payment=locked, to=target, **base, **changes):
            raise PaymentTransitionLost(f"payment {locked.pk} moved under its row lock")
        order_payment_summary_set(
            order_id=locked.order_id,
            payment_status=target,
            provider_payment_id=locked.provider_payment_id,
        )
        if target in OUTBOUND_STATUSES:
            payment_steps_nudge_on_commit()
    return True


def _step_request(payment: Payment, token: UUID) -> None:
    created = provider_create_payment(
        idempotency_key=provider_idempotency_key(payment.order_id),
        order_id=str(payment.order_id),
        amount=payment.amount,
        currency=payment.currency,
        email=payment.email,
    )
    _finish_step(
        payment=payment,
        token=token,
        expected=PaymentStatus.REQUESTING,
        changes={"status": PaymentStatus.PENDING, "provider_payment_id": created.id},
    )


def _step_cancel(payment: Payment, token: UUID) -> None:
    provider_id = payment.provider_payment_id
    if not provider_id:
        # A create may have reached the provider unanswered: the same key finds it (or
        # makes it), so the cancel below cannot miss a payment that exists there.
        provider_id = provider_create_payment(
            idempotency_key=provider_idempotency_key(payment.order_id),
            order_id=str(payment.order_id),
            amount=payment.amount,
            currency=payment.currency,
            email=payment.email,
        ).id
    try:
        provider_cancel_payment(provider_payment_id=provider_id)
        changes: dict[str, Any] = {
            "status": PaymentStatus.CANCELLED,
            "provider_payment_id": provider_id,
        }
    except ProviderRejected as exc:
        error = exc.body.get("error")
        if error == "payment_failed":
            # Declined before the cancel reached the provider: no money moved, nothing more
            # to do (the failure webhook of a cancelled order is recorded, not applied).
            changes = {"status": PaymentStatus.FAILED, "provider_payment_id": provider_id}
        elif error == "payment_succeeded":
            # Too late: the customer paid. The order stays cancelled; the money goes back.
            changes = {
                "status": PaymentStatus.REFUND_REQUESTED,
                "provider_payment_id": provider_id,
                "next_attempt_at": timezone.now(),
                "attempts": 0,
            }
        else:
            raise
    _finish_step(
        payment=payment, token=token, expected=PaymentStatus.CANCEL_REQUESTED, changes=changes
    )


def _step_refund(payment: Payment, token: UUID) -> None:
    try:
        # A payment reaches REFUND_REQUESTED only with the provider's id recorded.
        provider_refund_payment(provider_payment_id=cast(str, payment.provider_payment_id))
        changes = {"status": PaymentStatus.REFUND_PENDING}
    except ProviderRejected as exc:
        # No money was taken after all (the provider cancelled or declined it): there is
        # nothing to give back, and retrying the refund would never end.
        settled = {
            "payment_cancelled": PaymentStatus.CANCELLED,
            "payment_failed": PaymentStatus.FAILED,
        }.get(exc.body.get("error", ""))
        if settled is None:
            raise
        changes = {"status": settled}
    if (
        _finish_step(
            payment=payment,
            token=token,
            expected=PaymentStatus.REFUND_REQUESTED,
            changes=changes,
        )
        and changes["status"] == PaymentStatus.REFUND_PENDING
    ):
        metrics.REFUNDS.labels(stage="requested").inc()


_STEPS: dict[str, Callable[[Payment, UUID], None]] = {
    PaymentStatus.REQUESTING: _step_request,
    PaymentStatus.CANCEL_REQUESTED: _step_cancel,
    PaymentStatus.REFUND_REQUESTED: _step_refund,
}


# --- webhooks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookOutcome:
    status: str  # a WebhookStatus, or "duplicate"
    note: str = ""


def webhook_receive(*, webhook_id: str, event: dict) -> WebhookOutcome:
    """Record a verified webhook in the inbox and apply it, once, in one transaction.

    A redelivery (same webhook id, now or days later, even concurrently) changes nothing:
    the inbox row's unique key makes every copy but the first a no-op.
    """
    order_id = _order_id_of(event)
    with transaction.atomic():
        try:
            with transaction.atomic():
                entry = WebhookInboxEntry.objects.create(
                    webhook_id=webhook_id,
                    event_type=event["type"],
                    payload=event,
                    order_id=order_id,
                    status=WebhookStatus.WAITING,
                )
        except IntegrityError:
            metrics.WEBHOOKS.labels(outcome="duplicate").inc()
            return WebhookOutcome("duplicate")
        outcome = _apply(entry=entry, event=event, order_id=order_id)
    metrics.WEBHOOKS.labels(outcome=outcome.status).inc()
    return outcome


def webhook_retry_waiting(*, limit: int = 100) -> int:
    """Re-apply webhooks that arrived before their order was visible; returns how many."""
    done = 0
    due = WebhookInboxEntry.objects.filter(
        status=WebhookStatus.WAITING, next_attempt_at__lte=timezone.now()
    ).values_list("pk", flat=True)[:limit]
    for entry_id in list(due):
        with transaction.atomic():
            entry = lock_waiting_webhook(entry_id=entry_id)
            if entry is None:
                continue
            outcome = _apply(entry=entry, event=entry.payload, order_id=entry.order_id)
        metrics.WEBHOOKS.labels(outcome=f"retried_{outcome.status}").inc()
        done += 1
    return done


def _order_id_of(event: dict) -> UUID | None:
    try:
        return UUID(str(event["data"]["order_id"]))
    except (KeyError, TypeError, ValueError):
        return None


def _apply(*, entry: WebhookInboxEntry, event: dict, order_id: UUID | None) -> WebhookOutcome:
    """Apply one webhook. Precondition: inside the transaction that holds its inbox row."""
    try:
        if order_id is None:
            raise OrderNotFound
        # The payment's row is locked by its UPDATE, after any products a cancel releases.
        order, payment = lock_order_read_payment(order_id=order_id)
    except OrderNotFound:
        return _keep_waiting(entry)
    data = event["data"]
    if Decimal(str(data.get("amount"))) != order.total or data.get("currency") != order.currency:
        metrics.WEBHOOKS.labels(outcome="amount_mismatch").inc()
        logger.error(
            "webhook amount/currency does not match the order; not applied",
            extra={
                "webhook_id": entry.webhook_id,
                "order_id": str(order.pk),
                "amount": data.get("amount"),
                "currency": data.get("currency"),
            },
        )
        return _finish(
            entry,
            WebhookStatus.MISMATCH,
            f"webhook says {data.get('amount')} {data.get('currency')}, "
            f"order is {order.total} {order.currency}",
        )
    provider_id = str(data.get("payment_id") or "")
    owner = provider_payment_id_owner(provider_payment_id=provider_id, order_id=order.pk)
    if owner is not None:
        return _payment_id_mismatch(
            entry, order, provider_id, f"payment_id {provider_id} belongs to order {owner}"
        )
    if (
        event["type"] == "refund.succeeded"
        and payment is not None
        and payment.provider_payment_id
        and payment.provider_payment_id != provider_id
    ):
        return _payment_id_mismatch(
            entry,
            order,
            provider_id,
            f"refund of payment_id {provider_id}; the order's payment is "
            f"{payment.provider_payment_id}",
        )
    handler = {
        "payment.succeeded": _apply_succeeded,
        "payment.failed": _apply_failed,
        "refund.succeeded": _apply_refunded,
    }[event["type"]]
    try:
        # A savepoint: whatever the handler changed goes if it loses a race for the
        # provider id (another webhook bound it to another order since the check above).
        with transaction.atomic():
            status, note = handler(
                order=order, payment=payment, provider_id=provider_id, event=event
            )
    except ProviderPaymentIdTaken as taken:
        return _payment_id_mismatch(entry, order, provider_id, str(taken))
    except PaymentTransitionLost as lost:
        return _finish(entry, WebhookStatus.IGNORED, str(lost))
    return _finish(entry, status, note)


def _payment_id_mismatch(
    entry: WebhookInboxEntry, order, provider_id: str, note: str
) -> WebhookOutcome:
    """A signed webhook whose payment id is not the order's: recorded, alerted, not applied
    (a 2xx: the provider's retries could never change the answer)."""
    metrics.WEBHOOKS.labels(outcome="payment_id_mismatch").inc()
    logger.error(
        "webhook payment_id does not match the order's payment; not applied",
        extra={
            "webhook_id": entry.webhook_id,
            "order_id": str(order.pk),
            "provider_payment_id": provider_id,
            "detail": note,
        },
    )
    return _finish(entry, WebhookStatus.MISMATCH, note)


def _keep_waiting(entry: WebhookInboxEntry) -> WebhookOutcome:
    age = timezone.now() - entry.received_at
    if age > timedelta(days=1):
        return _finish(entry, WebhookStatus.UNMATCHED, "no such order after a day of retries")
    delay = min(60, 2 ** min(entry.attempts, 6))
    WebhookInboxEntry.objects.filter(pk=entry.pk).update(
        status=WebhookStatus.WAITING,
        attempts=F("attempts") + 1,
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
        note="order not found yet; will retry",
    )
    return WebhookOutcome(WebhookStatus.WAITING, "order not found yet")


def _finish(entry: WebhookInboxEntry, status: str, note: str = "") -> WebhookOutcome:
    WebhookInboxEntry.objects.filter(pk=entry.pk).update(
        status=status, note=note[:2000], processed_at=timezone.now(), next_attempt_at=None
    )
    return WebhookOutcome(status, note)


def _move_payment(*, order, payment: Payment | None, to: str, **changes: Any) -> None:
    """Move the order's payment (if it has one) and mirror it in the order's payment summary.

    The order's lock is held (every status writer takes it) and the move was checked
    against the table first, so the conditional update wins; if it ever does not, the
    caller's savepoint is rolled back (PaymentTransitionLost).
    """
    if payment is not None and not payment_transition(payment=payment, to=to, **changes):
        raise PaymentTransitionLost(f"payment {payment.pk} moved before {to} was applied")
    order_payment_summary_set(
        order_id=order.pk,
        payment_status=to,
        provider_payment_id=(payment.provider_payment_id if payment else None)
        or changes.get("provider_payment_id"),
    )


def _not_allowed(payment: Payment, to: str, why: str) -> tuple[str, str]:
    return WebhookStatus.IGNORED, f"payment is {payment.status}; {why} ({to} not allowed)"


def _apply_succeeded(*, order, payment, provider_id, event) -> tuple[str, str]:
    if order.status in (OrderStatus.PAID, OrderStatus.REFUNDED):
        return WebhookStatus.IGNORED, f"order already {order.status}"
    if order.status == OrderStatus.PENDING_PAYMENT:
        if payment is not None and not payment_can_move(payment.status, PaymentStatus.SUCCEEDED):
            return _not_allowed(payment, PaymentStatus.SUCCEEDED, "a success cannot follow it")
        order_mark_paid(order_id=order.pk)
        _move_payment(
            order=order,
            payment=payment,
            to=PaymentStatus.SUCCEEDED,
            provider_payment_id=provider_id,
        )
        return WebhookStatus.APPLIED, "order paid"
    # Cancelled (by the customer, staff or expiry) before the money arrived: refund it.
    if payment is None:
        return WebhookStatus.IGNORED, "order cancelled and it has no payment to refund"
    if payment.status in (
        PaymentStatus.REFUND_REQUESTED,
        PaymentStatus.REFUND_PENDING,
        PaymentStatus.REFUNDED,
    ):
        return WebhookStatus.IGNORED, "refund already under way"
    if not payment_can_move(payment.status, PaymentStatus.REFUND_REQUESTED):
        return _not_allowed(payment, PaymentStatus.REFUND_REQUESTED, "no refund to ask for")
    _move_payment(
        order=order,
        payment=payment,
        to=PaymentStatus.REFUND_REQUESTED,
        provider_payment_id=provider_id,
        next_attempt_at=timezone.now(),
        attempts=0,
        lease_token=None,
        lease_expires_at=None,
    )
    payment_steps_nudge_on_commit()
    return WebhookStatus.APPLIED, "order was cancelled; refund requested"


def _apply_failed(*, order, payment, provider_id, event) -> tuple[str, str]:
    if order.status != OrderStatus.PENDING_PAYMENT:
        # States never move backwards: a failure after a success (or a cancel) is noted only.
        return WebhookStatus.IGNORED, f"order is {order.status}; failure not applied"
    if payment is not None and not payment_can_move(payment.status, PaymentStatus.FAILED):
        return _not_allowed(payment, PaymentStatus.FAILED, "failure not applied")
    try:
        order_cancel(order_id=order.pk, reason=CancelReason.PAYMENT_FAILED)
    except InvalidTransition:
        return WebhookStatus.IGNORED, "order moved on meanwhile"
    _move_payment(
        order=order,
        payment=payment,
        to=PaymentStatus.FAILED,
        provider_payment_id=provider_id,
        last_error=str(event["data"].get("failure_reason", ""))[:2000],
    )
    return WebhookStatus.APPLIED, "order cancelled: payment failed"


def _apply_refunded(*, order, payment, provider_id, event) -> tuple[str, str]:
    if payment is None:
        return WebhookStatus.IGNORED, "the order has no payment to refund"
    if payment.status == PaymentStatus.REFUNDED:
        return WebhookStatus.IGNORED, "already refunded"
    if not payment_can_move(payment.status, PaymentStatus.REFUNDED):
        return _not_allowed(
            payment, PaymentStatus.REFUNDED, "a refund applies only to a payment that succeeded"
        )
    version = payment.event_version + 1
    _move_payment(
        order=order,
        payment=payment,
        to=PaymentStatus.REFUNDED,
        event_version=version,
        lease_token=None,
        lease_expires_at=None,
    )
    outbox_enqueue(
        event=EventEnvelope(
            type="payment.refunded",
            aggregate_type="payment",
            aggregate_id=str(payment.pk),
            version=version,
            payload={
                "payment_id": str(payment.pk),
                "provider_payment_id": payment.provider_payment_id or provider_id,
                "order_id": str(order.pk),
                "amount": str(payment.amount),
                "currency": payment.currency,
            },
        )
    )
    metrics.REFUNDS.labels(stage="completed").inc()
    if order.status == OrderStatus.PAID:
        # The provider refunded the money of a paid order (SPEC §2): the order is refunded
        # too; no stock comes back by itself (the goods may have shipped).
        order_mark_refunded(order_id=order.pk)
        return WebhookStatus.APPLIED, "payment and order refunded"
    return WebhookStatus.APPLIED, "refunded"
