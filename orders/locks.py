"""The only place that takes row locks on orders rows.

The service's global lock order is written once, in `lock_order`'s docstring.
"""

from __future__ import annotations

from uuid import UUID

from clients.models import ApiClient
from orders.errors import OrderNotFound
from orders.models import Order


def lock_order(*, order_id: UUID, client: ApiClient | None = None) -> Order:
    """Lock one order (FOR UPDATE). With `client`, another client's order is not found.

    The global lock order of the service is order -> products (by pk) -> payment, and it
    is written here, once. Every path that changes an existing order starts here (the API
    and admin cancels, expiry, the payment webhooks, the saga's record steps): it locks
    the order row first; it then takes any products only through catalog/locks.py, which
    locks them in one statement in pk order; payments takes its payment lock only after
    calling this function (payments/locks.py), and after the products when the path
    releases stock. Order creation locks products only: the new order row and its payment
    are invisible to others until commit. So no two paths ever wait on each other in
    opposite orders. tests/test_lock_order.py asserts each path's SQL against this.

    Precondition: inside transaction.atomic().
    """
    orders = Order.objects.select_for_update().filter(pk=order_id)
    if client is not None:
        orders = orders.filter(client=client)
    order = orders.first()  # evaluates the query, so the lock is taken here
    if order is None:
        raise OrderNotFound("No such order.")
    return order
