"""Reads of the orders app."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID

from django.db.models import Prefetch, QuerySet
from django.db.models.functions import Collate

from clients.models import ApiClient
from orders.models import Order, OrderItem


def _with_items(orders: QuerySet[Order]) -> QuerySet[Order]:
    # By code point (COLLATE "C"), whatever the database's collation: the 201 of a creation
    # sorts the same items in Python (orders.services), and the two must agree byte for byte.
    items = OrderItem.objects.order_by(Collate("sku", "C"))
    return orders.prefetch_related(Prefetch("items", queryset=items))


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


# --- the payment shown on an order (read-side hook) --------------------------------------


@dataclass(frozen=True)
class PaymentSummary:
    """What the API shows as an order's `payment`."""

    status: str
    provider_payment_id: str | None


PaymentSummaryReader = Callable[[Sequence[UUID]], Mapping[UUID, PaymentSummary]]
_payment_summary_reader: PaymentSummaryReader | None = None


def register_payment_summary_reader(reader: PaymentSummaryReader) -> None:
    """The payments app registers how to read orders' payments (from its AppConfig.ready()):
    orders shows a payment without importing payments, as it emits events to it."""
    global _payment_summary_reader
    _payment_summary_reader = reader


def order_payment_summaries(*, order_ids: Sequence[UUID]) -> Mapping[UUID, PaymentSummary]:
    """The payment of each order that has one, read at once for a page of orders."""
    if _payment_summary_reader is None or not order_ids:
        return {}
    return _payment_summary_reader(order_ids)
