"""The only place that takes row locks on payments rows.

Lock order: the order row first (orders/locks.py), then its payment. Every path that
changes a payment while an order changes (webhooks, the order.cancelled handler, the
saga's record steps) follows it, so none waits on another in the opposite order.
"""

from __future__ import annotations

from uuid import UUID

from orders.locks import lock_order
from orders.models import Order
from payments.models import Payment


def lock_order_and_payment(*, order_id: UUID) -> tuple[Order, Payment | None]:
    """Lock the order, then its payment (None if it has none). Precondition: in atomic()."""
    order = lock_order(order_id=order_id)
    payment = Payment.objects.select_for_update().filter(order_id=order_id).first()
    return order, payment
