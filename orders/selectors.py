"""Reads of the orders app."""

from __future__ import annotations

from uuid import UUID

from django.db.models import Prefetch, QuerySet

from orders.api_keys import api_key_hash
from orders.models import ApiClient, Order, OrderItem


def api_client_get_by_key(*, key: str) -> ApiClient | None:
    """The active client holding `key`, or None (unknown or revoked)."""
    return ApiClient.objects.filter(key_hash=api_key_hash(key), is_active=True).first()


def _with_items(orders: QuerySet[Order]) -> QuerySet[Order]:
    return orders.prefetch_related(Prefetch("items", queryset=OrderItem.objects.order_by("sku")))


def order_list_for_client(
    *, client: ApiClient, status: str | None = None, email: str | None = None
) -> QuerySet[Order]:
    orders = Order.objects.filter(client=client)
    if status:
        orders = orders.filter(status=status)
    if email:
        orders = orders.filter(email=email)
    return _with_items(orders)


def order_get_for_client(*, client: ApiClient, order_id: UUID) -> Order | None:
    """One of the client's orders; another client's order is None, as if it did not exist."""
    return _with_items(Order.objects.filter(client=client, pk=order_id)).first()


def order_get(*, order_id: UUID) -> Order | None:
    return _with_items(Order.objects.filter(pk=order_id)).first()
