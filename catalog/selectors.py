"""Reads of the catalog."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.functions import Upper

from catalog.models import Product


def product_list_active(*, search: str | None = None) -> QuerySet[Product]:
    products = Product.objects.filter(is_active=True)
    if search:
        # Upper(...) LIKE matches the trigram indexes on upper(name) / upper(sku).
        needle = search.upper()
        products = products.annotate(name_upper=Upper("name"), sku_upper=Upper("sku")).filter(
            Q(name_upper__contains=needle) | Q(sku_upper__contains=needle)
        )
    return products


def product_get_active(*, product_id: UUID) -> Product | None:
    return Product.objects.filter(pk=product_id, is_active=True).first()


@dataclass(frozen=True)
class ProductSnapshot:
    """A product as read without a lock: what an order expects to find when it takes the
    product's stock (catalog.services.stock_take_in checks each field again under the lock)."""

    id: UUID
    sku: str
    name: str
    price: Decimal
    is_active: bool
    stock: int


# product_snapshots is on every order creation's path: one hand-written statement costs a
# fraction of the ORM's query compilation (bench/order_cpu_profile.py).
_SNAPSHOTS_SQL = (
    "SELECT id, sku, name, price, is_active, stock FROM catalog_product WHERE id = ANY(%s)"
)


def product_snapshots(*, product_ids: Iterable[UUID]) -> dict[UUID, ProductSnapshot]:
    """The given products as they are now, by id (unknown ids absent). No lock is taken."""
    with connection.cursor() as cursor:
        cursor.execute(_SNAPSHOTS_SQL, [list(product_ids)])
        rows = cursor.fetchall()
    return {row[0]: ProductSnapshot(*row) for row in rows}
