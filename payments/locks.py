"""The only place that takes row locks on payments rows.

Lock order: the order row first (orders/locks.py), then its products (catalog), then its
payment. Every path that changes a payment while an order changes (webhooks, the
order.cancelled handler, the saga's record steps) follows it, so none waits on another in
the opposite order; every writer of a payment's status holds its order's lock.
"""

from __future__ import annotations

import uuid
from uuid import UUID

from django.db import connection, transaction

from orders.locks import lock_order
from orders.models import Order
from payments.models import Payment, WebhookInboxEntry, WebhookStatus

_CLAIM_SQL = """
WITH due AS (
    SELECT id FROM payments_payment
    WHERE status = ANY(%(statuses)s)
      AND next_attempt_at <= now()
      AND (lease_expires_at IS NULL OR lease_expires_at < now())
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE payments_payment AS p
SET lease_token = %(token)s,
    lease_expires_at = now() + make_interval(secs => %(lease)s),
    attempts = p.attempts + 1
FROM due WHERE p.id = due.id
RETURNING p.id
"""


def lock_order_and_payment(*, order_id: UUID) -> tuple[Order, Payment | None]:
    """Lock the order, then its payment (None if it has none). Precondition: in atomic()."""
    order = lock_order(order_id=order_id)
    payment = Payment.objects.select_for_update().filter(order_id=order_id).first()
    return order, payment


def lock_order_read_payment(*, order_id: UUID) -> tuple[Order, Payment | None]:
    """Lock the order and read its payment without a row lock. Precondition: in atomic().

    For paths that may go on to lock products (a failed payment cancels the order and
    releases its stock): the payment's row is then locked by the UPDATE that changes it,
    after the products, keeping the global order (order, products, payment). The status
    read stays true meanwhile: every writer of a payment's status holds its order's lock.
    """
    order = lock_order(order_id=order_id)
    payment = Payment.objects.filter(order_id=order_id).first()
    return order, payment


def claim_due_payments(
    *, statuses: list[str], limit: int, token: uuid.UUID, lease_seconds: float
) -> list[UUID]:
    """Lease up to `limit` payments whose outbound step is due (SKIP LOCKED: workers never
    wait on each other), counting an attempt; returns their ids. Runs its own transaction,
    so the row locks last one statement and the lease guards the step from then on."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL,
            {"statuses": statuses, "limit": limit, "token": token, "lease": lease_seconds},
        )
        return [row[0] for row in cursor.fetchall()]


def lock_waiting_webhook(*, entry_id: UUID) -> WebhookInboxEntry | None:
    """Lock an inbox entry still waiting for its order, or None if another worker has it
    (SKIP LOCKED) or it was applied meanwhile. Precondition: inside transaction.atomic()."""
    return (
        WebhookInboxEntry.objects.select_for_update(skip_locked=True)
        .filter(pk=entry_id, status=WebhookStatus.WAITING)
        .first()
    )
