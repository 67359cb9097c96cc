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
    order_payment_summary_set,
)
from outbox.services import EventEnvelope, outbox_enqueue
from payments import metrics
from payments.locks import claim_due_payments, lock_order_and_payment, lock_waiting_webhook
from payments.models import (
    OUTBOUND_STATUSES,
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
    changed = Payment.objects.filter(
        order_id=event.payload["order_id"], status__in=_CANCELLABLE
    ).update(
        status=PaymentStatus.CANCEL_REQUESTED,
        next_attempt_at=timezone.now(),
        attempts=0,
        updated_at=timezone.now(),
    )
    if changed:
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
    as far as it is still true (the provider id).
    """
    with transaction.atomic():
        _, locked = lock_order_and_payment(order_id=payment.order_id)
        if locked is None or locked.lease_token != token:
            return False  # our lease expired and someone else owns the step now
        base = {
            "lease_token": None,
            "lease_expires_at": None,
            "last_error": "",
            "updated_at": timezone.now(),
        }
        provider_id = changes.get("provider_payment_id")
        if locked.status != expected:
            if provider_id and not locked.provider_payment_id:
                base["provider_payment_id"] = provider_id
            Payment.objects.filter(pk=locked.pk).update(**base)
            if "provider_payment_id" in base:
                order_payment_summary_set(order_id=locked.order_id, provider_payment_id=provider_id)
            return False
        Payment.objects.filter(pk=locked.pk).update(**base, **changes)
        order_payment_summary_set(
            order_id=locked.order_id,
            payment_status=changes.get("status", locked.status),
            provider_payment_id=provider_id or locked.provider_payment_id,
        )
        if changes.get("status") in OUTBOUND_STATUSES:
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
        order, payment = lock_order_and_payment(order_id=order_id)
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
    handler = {
        "payment.succeeded": _apply_succeeded,
        "payment.failed": _apply_failed,
        "refund.succeeded": _apply_refunded,
    }[event["type"]]
    status, note = handler(order=order, payment=payment, provider_id=provider_id, event=event)
    return _finish(entry, status, note)


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


def _payment_update(payment: Payment | None, order, **changes) -> None:
    if payment is not None:
        Payment.objects.filter(pk=payment.pk).update(updated_at=timezone.now(), **changes)
    order_payment_summary_set(
        order_id=order.pk,
        payment_status=changes.get("status", payment.status if payment else ""),
        provider_payment_id=changes.get("provider_payment_id")
        or (payment.provider_payment_id if payment else "")
        or "",
    )


def _apply_succeeded(*, order, payment, provider_id, event) -> tuple[str, str]:
    if order.status == OrderStatus.PAID:
        return WebhookStatus.IGNORED, "order already paid"
    if order.status == OrderStatus.PENDING_PAYMENT:
        order_mark_paid(order_id=order.pk)
        _payment_update(
            payment, order, status=PaymentStatus.SUCCEEDED, provider_payment_id=provider_id
        )
        return WebhookStatus.APPLIED, "order paid"
    # Cancelled (by the customer, staff or expiry) before the money arrived: refund it.
    if payment is not None and payment.status in (
        PaymentStatus.REFUND_REQUESTED,
        PaymentStatus.REFUND_PENDING,
        PaymentStatus.REFUNDED,
    ):
        return WebhookStatus.IGNORED, "refund already under way"
    _payment_update(
        payment,
        order,
        status=PaymentStatus.REFUND_REQUESTED,
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
    try:
        order_cancel(order_id=order.pk, reason=CancelReason.PAYMENT_FAILED)
    except InvalidTransition:
        return WebhookStatus.IGNORED, "order moved on meanwhile"
    _payment_update(
        payment,
        order,
        status=PaymentStatus.FAILED,
        provider_payment_id=provider_id,
        last_error=str(event["data"].get("failure_reason", ""))[:2000],
    )
    return WebhookStatus.APPLIED, "order cancelled: payment failed"


def _apply_refunded(*, order, payment, provider_id, event) -> tuple[str, str]:
    if payment is None or payment.status == PaymentStatus.REFUNDED:
        return WebhookStatus.IGNORED, "nothing to refund or already refunded"
    version = payment.event_version + 1
    _payment_update(
        payment,
        order,
        status=PaymentStatus.REFUNDED,
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
    return WebhookStatus.APPLIED, "refunded"
