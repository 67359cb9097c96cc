"""The payment state machine (SPEC §5): the one place a payment's status changes.

The moves themselves are a table (payments/models.py PAYMENT_TRANSITIONS); this module
applies them as conditional UPDATEs. What drives the moves lives apart, by reason to
change: reactions to order events (reactions.py), the saga's calls to the provider
(steps.py) and the provider's webhooks (webhooks.py, webhook_effects.py).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone

from payments import metrics
from payments.errors import PaymentTransitionNotAllowed, ProviderPaymentIdTaken
from payments.models import PAYMENT_TRANSITIONS, Payment


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
    won = payment_write(payment=payment, expected=current, changes={"status": to, **changes}) == 1
    if won:
        metrics.PAYMENT_TRANSITIONS.labels(from_status=current, to_status=to).inc()
        for name, value in changes.items():
            setattr(payment, name, value)
        payment.status = to
    return won


def payment_write(*, payment: Payment, expected: str | None, changes: dict[str, Any]) -> int:
    """UPDATE one payment row (WHERE status = expected, given one); returns the row count.

    For changes that move no status (bookkeeping, a provider id learnt late); status moves
    go through payment_transition. provider_payment_id is unique: a value another payment
    holds is refused before the write, and a racing writer of the same value fails only
    this statement's savepoint, so neither ever surfaces as an IntegrityError (a 500 the
    provider would retry for ever).
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
