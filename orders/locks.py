"""The only place that takes row locks on orders rows.

Global lock order of the service: an order row first, then its products in pk order
(catalog/locks.py). Order creation locks only products (the new order row is invisible to
others), so no two paths ever wait on each other in opposite orders.
"""

from __future__ import annotations

from uuid import UUID

from clients.models import ApiClient
from orders.errors import OrderNotFound
from orders.models import Order


def lock_order(*, order_id: UUID, client: ApiClient | None = None) -> Order:
    """Lock one order (FOR UPDATE). With `client`, another client's order is not found.

    Precondition: inside transaction.atomic().
    """
    orders = Order.objects.select_for_update().filter(pk=order_id)
    if client is not None:
        orders = orders.filter(client=client)
    order = orders.first()  # evaluates the query, so the lock is taken here
    if order is None:
        raise OrderNotFound("No such order.")
    return order
