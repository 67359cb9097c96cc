"""Webhook intake (SPEC §5): each verified, parsed webhook is recorded in the inbox and
applied once, in one transaction.

The inbox row's unique webhook id makes every redelivery a no-op. A webhook is matched to
its order and checked (amount, currency, payment id) here; what it then does to the order
and the payment is webhook_effects.py's. A webhook for an order not visible yet waits in
the inbox and is retried with backoff (the leased-work primitive, payments/locks.py) for a
day, then given up as unmatched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.leased_work import run_until_idle
from orders.errors import OrderNotFound
from orders.models import Order
from payments import metrics
from payments.errors import PaymentTransitionLost, ProviderPaymentIdTaken
from payments.locks import WAITING_WEBHOOK_WORK, lock_next_waiting_webhook, lock_order_read_payment
from payments.models import Payment, WebhookInboxEntry, WebhookStatus
from payments.services import provider_payment_id_owner
from payments.webhook_effects import EFFECTS

logger = logging.getLogger(__name__)

_WAIT_FOR_ORDER = timedelta(days=1)
_RETRY_TIME_BUDGET_SECONDS = 5.0


# What the receiver answers a delivery with: the inbox entry's status, or `duplicate` for a
# redelivery of a webhook id it has already recorded.
DUPLICATE = "duplicate"
OUTCOMES = [*WebhookStatus.choices, (DUPLICATE, "Already recorded: a redelivery")]


@dataclass(frozen=True)
class WebhookOutcome:
    status: str  # a value of OUTCOMES
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
            metrics.WEBHOOKS.labels(outcome=DUPLICATE).inc()
            return WebhookOutcome(DUPLICATE)
        outcome = _apply(entry=entry, event=event, order_id=order_id)
    metrics.WEBHOOKS.labels(outcome=outcome.status).inc()
    return outcome


def webhook_retry_waiting(*, limit: int = 100) -> int:
    """Re-apply webhooks that arrived before their order was visible; returns how many."""
    retried = run_until_idle(
        _retry_next_waiting,
        idle=lambda retried_one: not retried_one,
        time_budget=_RETRY_TIME_BUDGET_SECONDS,
        max_batches=limit,
    )
    return sum(retried)


def _retry_next_waiting() -> bool:
    """Apply the next due waiting webhook in its own transaction; False when none is due."""
    with transaction.atomic():
        entry = lock_next_waiting_webhook()
        if entry is None:
            return False
        outcome = _apply(entry=entry, event=entry.payload, order_id=entry.order_id)
    metrics.WEBHOOKS.labels(outcome=f"retried_{outcome.status}").inc()
    return True


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
        return _amount_mismatch(entry, order, data)
    provider_id = str(data.get("payment_id") or "")
    mismatch = _payment_id_mismatch_of(event, order, payment, provider_id)
    if mismatch:
        return _payment_id_mismatch(entry, order, provider_id, mismatch)
    try:
        # A savepoint: whatever the effect changed goes if it loses a race for the
        # provider id (another webhook bound it to another order since the check above).
        with transaction.atomic():
            status, note = EFFECTS[event["type"]](
                order=order, payment=payment, provider_id=provider_id, event=event
            )
    except ProviderPaymentIdTaken as taken:
        return _payment_id_mismatch(entry, order, provider_id, str(taken))
    except PaymentTransitionLost as lost:
        return _inbox_entry_close(entry, WebhookStatus.IGNORED, str(lost))
    return _inbox_entry_close(entry, status, note)


def _payment_id_mismatch_of(
    event: dict, order: Order, payment: Payment | None, provider_id: str
) -> str:
    """Why the webhook's payment id is not the order's ("" when it may be)."""
    owner = provider_payment_id_owner(provider_payment_id=provider_id, order_id=order.pk)
    if owner is not None:
        return f"payment_id {provider_id} belongs to order {owner}"
    if (
        event["type"] == "refund.succeeded"
        and payment is not None
        and payment.provider_payment_id
        and payment.provider_payment_id != provider_id
    ):
        return (
            f"refund of payment_id {provider_id}; the order's payment is "
            f"{payment.provider_payment_id}"
        )
    return ""


def _amount_mismatch(entry: WebhookInboxEntry, order: Order, data: dict) -> WebhookOutcome:
    """A signed webhook whose amount or currency is not the order's: recorded, alerted,
    not applied."""
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
    return _inbox_entry_close(
        entry,
        WebhookStatus.MISMATCH,
        f"webhook says {data.get('amount')} {data.get('currency')}, "
        f"order is {order.total} {order.currency}",
    )


def _payment_id_mismatch(
    entry: WebhookInboxEntry, order: Order, provider_id: str, note: str
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
    return _inbox_entry_close(entry, WebhookStatus.MISMATCH, note)


def _keep_waiting(entry: WebhookInboxEntry) -> WebhookOutcome:
    """No such order (yet): try again later, or give up after a day of tries."""
    if timezone.now() - entry.received_at > _WAIT_FOR_ORDER:
        return _inbox_entry_close(
            entry, WebhookStatus.UNMATCHED, "no such order after a day of retries"
        )
    WAITING_WEBHOOK_WORK.retry(
        pk=entry.pk,
        attempt=entry.attempts,
        error="order not found yet; will retry",
        status=WebhookStatus.WAITING,
    )
    return WebhookOutcome(WebhookStatus.WAITING, "order not found yet")


def _inbox_entry_close(entry: WebhookInboxEntry, status: str, note: str = "") -> WebhookOutcome:
    """Record the webhook's final outcome on its inbox row: it is never retried again."""
    WebhookInboxEntry.objects.filter(pk=entry.pk).update(
        status=status, note=note[:2000], processed_at=timezone.now(), next_attempt_at=None
    )
    return WebhookOutcome(status, note)
