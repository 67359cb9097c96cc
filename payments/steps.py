"""The saga's outbound steps (SPEC §5): request, cancel or refund a payment at the provider.

The saga is driven by rows, not by messages: a payment whose status says the provider is
owed a call (OUTBOUND_STATUSES) is claimed with a lease (payments/locks.py, through the
leased-work primitive), the provider is called with no transaction open, and its answer is
recorded under the order's and the payment's row locks. Technical failures back off and
retry for ever; they never cancel an order.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.leased_work import run_until_idle
from payments import metrics
from payments.errors import (
    PaymentTransitionLost,
    ProviderPaymentIdTaken,
    ProviderRejected,
    ProviderUnavailable,
)
from payments.locks import PAYMENT_STEP_WORK, claim_due_payments, lock_order_and_payment
from payments.models import OUTBOUND_STATUSES, Payment, PaymentStatus
from payments.nudge import payment_steps_nudge_on_commit
from payments.provider import (
    provider_cancel_payment,
    provider_create_payment,
    provider_refund_payment,
)
from payments.services import payment_transition, payment_write

logger = logging.getLogger(__name__)


@dataclass
class StepsReport:
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0


def provider_idempotency_key(order_id: UUID) -> str:
    """One provider payment per order, however often the request step is retried."""
    return f"order-{order_id}"


def payment_steps_run(*, limit: int = 50) -> StepsReport:
    """Work every payment step that is due: request, cancel or refund at the provider."""
    token = uuid.uuid4()
    ids = claim_due_payments(limit=limit, token=token)
    report = StepsReport(claimed=len(ids))
    for payment in Payment.objects.filter(pk__in=ids).order_by("next_attempt_at"):
        step = payment.status
        if step not in _STEPS:
            # A webhook settled the payment between the claim and this read (e.g. the
            # success of a request still in flight): nothing is owed any more.
            PAYMENT_STEP_WORK.release(ids=[payment.pk], token=token)
            continue
        outcome = _step_attempt(payment=payment, token=token)
        metrics.SAGA_STEPS.labels(step=step, outcome=outcome).inc()
        if outcome == "ok":
            report.succeeded += 1
        elif outcome == "retry":
            report.retried += 1
    return report


def payment_steps_run_until_idle() -> int:
    """Run due steps until none is left or PAYMENT_STEPS_TIME_BUDGET is spent; returns how
    many payments were claimed."""
    reports = run_until_idle(
        payment_steps_run,
        idle=lambda report: report.claimed == 0,
        time_budget=settings.PAYMENT_STEPS_TIME_BUDGET,
    )
    return sum(report.claimed for report in reports)


def _step_attempt(*, payment: Payment, token: UUID) -> str:
    """Run the payment's step; a failure is recorded on the payment for a retry, never
    raised. Returns the outcome label of payments_saga_steps_total."""
    try:
        _STEPS[payment.status](payment, token)
        return "ok"
    except ProviderUnavailable as exc:
        _step_retry(payment=payment, token=token, error=str(exc))
        return "retry"
    except ProviderRejected as exc:
        # The provider refused our request as such: retrying as-is will not help, but a
        # refusal must not cancel the order either; staff see it, expiry settles it.
        _step_retry(payment=payment, token=token, error=f"rejected: {exc}", slowest=True)
        _log_step_error("provider rejected a saga step", payment, exc)
        return "rejected"
    except ProviderPaymentIdTaken as exc:
        # The provider answered with a payment id we hold for another order: recording
        # it would break the one-payment-per-id rule, so nothing is recorded; staff see
        # it on the payment, and the step is retried slowly.
        _step_retry(payment=payment, token=token, error=str(exc), slowest=True)
        _log_step_error("provider answered with a payment id bound to another order", payment, exc)
        return "payment_id_taken"
    except Exception as exc:
        # A bug or an unexpected answer must not hold the rest of the batch until the
        # lease ends: record it on this payment, retry slowly, and carry on.
        logger.exception(
            "saga step failed", extra={"payment_id": str(payment.pk), "step": payment.status}
        )
        error = f"{type(exc).__name__}: {exc}"
        _step_retry(payment=payment, token=token, error=error, slowest=True)
        return "error"


def _log_step_error(message: str, payment: Payment, exc: Exception) -> None:
    logger.error(
        message,
        extra={"payment_id": str(payment.pk), "step": payment.status, "error": str(exc)},
    )


def _step_retry(*, payment: Payment, token: UUID, error: str, slowest: bool = False) -> None:
    PAYMENT_STEP_WORK.retry(
        pk=payment.pk,
        token=token,
        attempt=payment.attempts,
        error=error,
        slowest=slowest,
        updated_at=timezone.now(),
    )


def _step_answer_record(*, payment: Payment, token: UUID, expected: str, changes: dict) -> bool:
    """Record the provider's answer to a step, if the payment is still where the step left
    it; returns whether it was (the step's outcome is then the payment's status).

    Locks the order then the payment (payments/locks.py order). Our lease must still hold
    (checked under the row lock: a fenced completion). When the payment moved meanwhile (a
    webhook or a cancellation won), the answer is kept only as far as it is still true:
    the provider id. `changes` holds the new status. Raises ProviderPaymentIdTaken
    (nothing recorded) when the provider's id is another order's.
    """
    changes = dict(changes)
    target = changes.pop("status")
    provider_id = changes.get("provider_payment_id")
    with transaction.atomic():
        _, locked = lock_order_and_payment(order_id=payment.order_id)
        if locked is None or locked.lease_token != token:
            return False  # our lease expired and someone else owns the step now
        lease_done: dict[str, Any] = {
            "lease_token": None,
            "lease_expires_at": None,
            "last_error": "",
        }
        if locked.status != expected:
            if provider_id and not locked.provider_payment_id:
                lease_done["provider_payment_id"] = provider_id
            payment_write(payment=locked, expected=None, changes=lease_done)
            return False
        # Under the payment's row lock: the conditional update cannot lose.
        if not payment_transition(payment=locked, to=target, **lease_done, **changes):
            raise PaymentTransitionLost(f"payment {locked.pk} moved under its row lock")
        if target in OUTBOUND_STATUSES:
            payment_steps_nudge_on_commit()
    return True


def _provider_payment_get_or_create(payment: Payment) -> str:
    """The provider's id of the order's payment: the same idempotency key finds the payment
    a create made there (even one whose answer never reached us), or makes it."""
    return provider_create_payment(
        idempotency_key=provider_idempotency_key(payment.order_id),
        order_id=str(payment.order_id),
        amount=payment.amount,
        currency=payment.currency,
        email=payment.email,
    ).id


def _step_request(payment: Payment, token: UUID) -> None:
    _step_answer_record(
        payment=payment,
        token=token,
        expected=PaymentStatus.REQUESTING,
        changes={
            "status": PaymentStatus.PENDING,
            "provider_payment_id": _provider_payment_get_or_create(payment),
        },
    )


def _step_cancel(payment: Payment, token: UUID) -> None:
    # A create may have reached the provider unanswered: the same key finds it (or makes
    # it), so the cancel below cannot miss a payment that exists there.
    provider_id = payment.provider_payment_id or _provider_payment_get_or_create(payment)
    changes: dict[str, Any] = {"provider_payment_id": provider_id}
    try:
        provider_cancel_payment(provider_payment_id=provider_id)
        changes["status"] = PaymentStatus.CANCELLED
    except ProviderRejected as exc:
        error = exc.body.get("error")
        if error == "payment_failed":
            # Declined before the cancel reached the provider: no money moved, nothing more
            # to do (the failure webhook of a cancelled order is recorded, not applied).
            changes["status"] = PaymentStatus.FAILED
        elif error == "payment_succeeded":
            # Too late: the customer paid. The order stays cancelled; the money goes back.
            changes.update(
                status=PaymentStatus.REFUND_REQUESTED, next_attempt_at=timezone.now(), attempts=0
            )
        else:
            raise
    _step_answer_record(
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
    recorded = _step_answer_record(
        payment=payment, token=token, expected=PaymentStatus.REFUND_REQUESTED, changes=changes
    )
    if recorded and changes["status"] == PaymentStatus.REFUND_PENDING:
        metrics.REFUNDS.labels(stage="requested").inc()


_STEPS: dict[str, Callable[[Payment, UUID], None]] = {
    PaymentStatus.REQUESTING: _step_request,
    PaymentStatus.CANCEL_REQUESTED: _step_cancel,
    PaymentStatus.REFUND_REQUESTED: _step_refund,
}
