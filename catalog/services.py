"""Writes of the catalog: staff edits of products.

Every write here goes through `save()` so django-simple-history records who (the
`changed_by` user, else the request's user via HistoryRequestMiddleware), when and what.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Case, F, When
from django.db.models.functions import Now

from catalog.errors import InsufficientStock, ProductUnavailable, StockAdjustmentInvalid
from catalog.locks import lock_product, lock_products, lock_products_statement
from catalog.models import Product
from catalog.selectors import ProductSnapshot
from core.unit_of_work import Phase, Refusal, Statement, UnitOfWork

STAFF_EDITABLE_FIELDS = ("sku", "name", "description", "price", "is_active")


def product_create(
    *, stock: int = 0, changed_by: AbstractBaseUser | None = None, **fields: Any
) -> Product:
    product = Product(stock=stock, **fields)
    product.full_clean()
    _set_history(product, changed_by=changed_by, reason="created")
    product.save()
    return product


def product_check_stock_adjustment(
    *, product_id: UUID, stock_seen: int, stock_entered: int
) -> Product:
    """Lock the product and check that applying `stock_entered - stock_seen` keeps stock >= 0.

    Raises StockAdjustmentInvalid (or Product.DoesNotExist); returns the locked product.
    Precondition: inside transaction.atomic(). The lock is held until that transaction
    ends, so a `product_update_by_staff` later in the same transaction applies the
    adjustment to exactly the stock checked here (the admin validates the form and saves
    it in one transaction, which is how a refusal becomes a form error, not a 500).
    """
    product = lock_product(product_id=product_id)
    adjustment = stock_entered - stock_seen
    if adjustment and product.stock + adjustment < 0:
        raise StockAdjustmentInvalid(
            f"Stock is {product.stock} now (it was {stock_seen} when the form was "
            f"opened); removing {-adjustment} units would make it negative.",
            current_stock=product.stock,
        )
    return product


def product_update_by_staff(
    *,
    product_id: UUID,
    fields: dict[str, Any],
    stock_seen: int,
    stock_entered: int,
    changed_by: AbstractBaseUser | None = None,
) -> Product:
    """Apply a staff edit without losing concurrent stock changes.

    `stock_seen` is the stock shown when the form was opened, `stock_entered` what the
    person typed. Their difference is applied as an adjustment to the current stock, so
    units sold meanwhile are never overwritten; an adjustment that would go below zero is
    refused. The history row (who/when/what) is written by the final save().
    """
    adjustment = stock_entered - stock_seen
    with transaction.atomic():
        product = product_check_stock_adjustment(
            product_id=product_id, stock_seen=stock_seen, stock_entered=stock_entered
        )
        if adjustment:
            Product.objects.filter(pk=product.pk).update(stock=F("stock") + adjustment)
            product.refresh_from_db(fields=["stock"])
        for name, value in fields.items():
            if name not in STAFF_EDITABLE_FIELDS:
                raise ValueError(f"{name} is not a staff-editable product field")
            setattr(product, name, value)
        _set_history(
            product,
            changed_by=changed_by,
            reason=f"staff edit; stock adjusted by {adjustment:+d}" if adjustment else "staff edit",
        )
        # Stock here equals the locked row's value, so saving it is no blind overwrite.
        product.save()
    return product


def product_set_active(
    *, product_ids: Iterable[UUID], is_active: bool, changed_by: AbstractBaseUser | None = None
) -> int:
    """Bulk (de)activate products, each with its own history row; returns how many changed."""
    changed = 0
    with transaction.atomic():
        for product in lock_products(product_ids=product_ids).values():
            if product.is_active == is_active:
                continue
            product.is_active = is_active
            _set_history(
                product, changed_by=changed_by, reason="activated" if is_active else "deactivated"
            )
            product.save(update_fields=["is_active", "updated_at"])
            changed += 1
    return changed


def stock_reserve(*, quantities: dict[UUID, int]) -> dict[UUID, Product]:
    """Take units out of stock for every line, or for none.

    Locks the products in pk order, checks that all are active and have enough stock,
    then decrements them in one UPDATE. Returns the locked products (prices and names as
    of now, for the order's snapshots). Precondition: inside the caller's transaction.
    Raises ProductUnavailable (unknown/inactive ids) or InsufficientStock (every short line).
    """
    products = lock_products(product_ids=quantities)
    unavailable = sorted(
        str(pid) for pid in quantities if pid not in products or not products[pid].is_active
    )
    if unavailable:
        raise ProductUnavailable(unavailable)
    shortages = [
        {"product_id": str(pid), "requested": qty, "available": products[pid].stock}
        for pid, qty in sorted(quantities.items())
        if products[pid].stock < qty
    ]
    if shortages:
        raise InsufficientStock(shortages)
    _stock_add(deltas={pid: -qty for pid, qty in quantities.items()})
    return products


STOCK_TAKE = "catalog.stock_take"

# Takes every line's units from its locked product, if the product is still exactly as the
# order read it (active, same sku, name and price); otherwise it sets stock to -1. Either a
# short line or a changed product therefore violates product_stock_non_negative, and the
# whole unit of work rolls back: the constraint is the one guard, checked under the lock.
_STOCK_TAKE_SQL = """
UPDATE catalog_product AS product
   SET stock = CASE WHEN product.is_active
                         AND product.price = line.price
                         AND product.sku = line.sku
                         AND product.name = line.name
                    THEN product.stock - line.quantity
                    ELSE -1 END,
       updated_at = statement_timestamp()
  FROM (VALUES {rows}) AS line (id, quantity, price, sku, name)
 WHERE product.id = line.id"""
_STOCK_TAKE_ROW = "(%s::uuid, %s::integer, %s::numeric, %s::text, %s::text)"


def stock_take_in(
    *, work: UnitOfWork, quantities: Mapping[UUID, int], expected: Mapping[UUID, ProductSnapshot]
) -> None:
    """stock_reserve for a unit of work, with the locks taken last: lock the products (pk
    order) after the work's INSERTs, then take the units in one guarded UPDATE.

    The work is refused (WorkRefused(STOCK_TAKE)) when a line is short or its product is no
    longer active at the price, sku and name in `expected`: an order can only carry the
    snapshot that was current when its stock was taken. Precondition: `expected` has every
    product of `quantities`.
    """
    ids = sorted(quantities)
    params: list = []
    for product_id in ids:
        product = expected[product_id]
        params += [product_id, quantities[product_id], product.price, product.sku, product.name]
    work.add(lock_products_statement(product_ids=ids))
    work.add(
        Statement(
            name=STOCK_TAKE,
            sql=_STOCK_TAKE_SQL.format(rows=", ".join([_STOCK_TAKE_ROW] * len(ids))),
            params=tuple(params),
            phase=Phase.GUARD,
            refusals=(Refusal(sqlstate="23514", constraint="product_stock_non_negative"),),
        )
    )


def stock_release(*, quantities: dict[UUID, int]) -> None:
    """Give reserved units back (a cancelled order). Precondition: inside a transaction."""
    lock_products(product_ids=quantities)
    _stock_add(deltas=quantities)


def _stock_add(*, deltas: dict[UUID, int]) -> None:
    # One statement for all lines; F() keeps it relative to the row's current value and
    # the CHECK (stock >= 0) constraint stays the last line of defence.
    Product.objects.filter(pk__in=list(deltas)).update(
        stock=Case(
            *(When(pk=pid, then=F("stock") + delta) for pid, delta in deltas.items()),
            default=F("stock"),
        ),
        updated_at=Now(),
    )


def _set_history(product: Product, *, changed_by: AbstractBaseUser | None, reason: str) -> None:
    """Tell simple_history who made the next save() and why (reason: at most 100 chars)."""
    product._change_reason = reason  # type: ignore[attr-defined]
    if changed_by is not None:
        # Without it simple_history falls back to the request's user (HistoryRequestMiddleware).
        product._history_user = changed_by  # type: ignore[attr-defined]
