"""The only place that takes row locks on payments rows.

Lock order: the service's one global order, written in orders/locks.py `lock_order`
(order → products by pk → payment). Every function here that locks a payment calls
`lock_order` first and locks or updates the payment only after it, and after the products
on paths that release stock (`lock_order_read_payment`). Every writer of a payment's status
holds its order's lock. tests/test_lock_order.py asserts it per path.

Work tables, through the leased-work primitive (core/leased_work.py), each with its policy:
payments owed a provider call are claimed with a lease (the call runs with no transaction
open); webhooks waiting for their order are locked by the transaction that applies them.
"""

from __future__ import annotations

from uuid import UUID

from django.conf import settings

from core.leased_work import LeasedWork
from orders.locks import lock_order
from orders.models import Order
from payments.models import OUTBOUND_STATUSES, Payment, WebhookInboxEntry, WebhookStatus

_OUTBOUND = ", ".join(f"'{status.value}'" for status in OUTBOUND_STATUSES)

PAYMENT_STEP_WORK = LeasedWork(
    model=Payment,
    due=f"w.status IN ({_OUTBOUND})",
    order_by="w.next_attempt_at",
    lease_seconds=lambda: settings.PAYMENT_STEP_LEASE_SECONDS,
    # 1, 2, 4, 8, 16, 30 s, then 30 s for ever: a step never gives up by itself (an order
    # is never cancelled by a technical failure; expiry settles an order that waits).
    backoff=lambda: settings.PAYMENT_RETRY_BACKOFF,
)

WAITING_WEBHOOK_WORK = LeasedWork(
    model=WebhookInboxEntry,
    due=f"w.status = '{WebhookStatus.WAITING.value}'",
    order_by="w.next_attempt_at",
    # After the nth try: 2, 4, 8, 16, 32, then 60 s for ever (an entry gives up on its
    # order after a day, webhooks.py, not after a number of tries). No jitter: waiting
    # entries are few, and each retry is one short transaction.
    backoff=lambda: (2, 4, 8, 16, 32, 60),
    jitter=0.0,
    error_field="note",
)


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


def claim_due_payments(*, limit: int, token: UUID) -> list[UUID]:
    """Lease up to `limit` payments whose outbound step is due (SKIP LOCKED: workers never
    wait on each other), counting an attempt; returns their ids. Runs its own transaction,
    so the row locks last one statement and the lease guards the step from then on."""
    return PAYMENT_STEP_WORK.claim(limit=limit, token=token)


def lock_next_waiting_webhook() -> WebhookInboxEntry | None:
    """Lock the next inbox entry due for another try at finding its order, or None when
    none is (entries other workers hold are skipped). Precondition: in atomic()."""
    ids = WAITING_WEBHOOK_WORK.lock_due(limit=1)
    return WebhookInboxEntry.objects.filter(pk__in=ids).first()
