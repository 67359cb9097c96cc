"""The only place that takes row locks on catalog rows.

Locks are always taken in primary-key order, so two transactions that lock overlapping
sets of products queue behind each other instead of deadlocking. They are FOR NO KEY UPDATE:
stock changes touch no key, and a plain FOR UPDATE would also conflict with the KEY SHARE
lock that every order item INSERT's foreign-key check takes on its product, so a path that
inserts items before it locks their products would deadlock against another that locks
first.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from catalog.models import Product
from core.unit_of_work import Phase, Statement

# The statement form of lock_products, for a unit of work (core.unit_of_work): the rows come
# back sorted, and LockRows locks them in that order.
_LOCK_PRODUCTS_SQL = (
    "SELECT id FROM catalog_product WHERE id = ANY(%s) "
    "ORDER BY catalog_product.id ASC FOR NO KEY UPDATE"
)


def lock_products(*, product_ids: Iterable[UUID]) -> dict[UUID, Product]:
    """Lock the given products (FOR NO KEY UPDATE, pk order) and return them by id.

    Precondition: inside transaction.atomic(). Unknown ids are simply absent.
    """
    ids = sorted(set(product_ids))
    # list() evaluates the queryset: a lazy select_for_update() would take no lock.
    products = list(
        Product.objects.select_for_update(no_key=True).filter(pk__in=ids).order_by("pk")
    )
    return {product.pk: product for product in products}


def lock_product(*, product_id: UUID) -> Product:
    """Lock one product; raises Product.DoesNotExist."""
    locked = lock_products(product_ids=[product_id])
    if product_id not in locked:
        raise Product.DoesNotExist(product_id)
    return locked[product_id]


def lock_products_statement(*, product_ids: Iterable[UUID]) -> Statement:
    """lock_products as a unit-of-work statement (LOCK phase: after the work's INSERTs)."""
    return Statement(
        name="catalog.lock_products",
        sql=_LOCK_PRODUCTS_SQL,
        params=(sorted(set(product_ids)),),
        phase=Phase.LOCK,
    )
