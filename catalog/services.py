"""Writes of the catalog: staff edits of products."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import F

from catalog.errors import StockAdjustmentInvalid
from catalog.locks import lock_product, lock_products
from catalog.models import Product

STAFF_EDITABLE_FIELDS = ("sku", "name", "description", "price", "is_active")


def product_create(*, stock: int = 0, **fields: Any) -> Product:
    product = Product(stock=stock, **fields)
    product.full_clean()
    product.save()
    return product


def product_update_by_staff(
    *, product_id: UUID, fields: dict[str, Any], stock_seen: int, stock_entered: int
) -> Product:
    """Apply a staff edit without losing concurrent stock changes.

    `stock_seen` is the stock shown when the form was opened, `stock_entered` what the
    person typed. Their difference is applied as an adjustment to the current stock, so
    units sold meanwhile are never overwritten; an adjustment that would go below zero is
    refused. The history row (who/when/what) is written by the final save().
    """
    adjustment = stock_entered - stock_seen
    with transaction.atomic():
        product = lock_product(product_id=product_id)
        if adjustment:
            if product.stock + adjustment < 0:
                raise StockAdjustmentInvalid(
                    f"Stock is {product.stock} now (it was {stock_seen} when the form was "
                    f"opened); removing {-adjustment} units would make it negative.",
                    current_stock=product.stock,
                )
            Product.objects.filter(pk=product.pk).update(stock=F("stock") + adjustment)
            product.refresh_from_db(fields=["stock"])
        for name, value in fields.items():
            if name not in STAFF_EDITABLE_FIELDS:
                raise ValueError(f"{name} is not a staff-editable product field")
            setattr(product, name, value)
        product._change_reason = (  # type: ignore[attr-defined]
            f"staff edit; stock adjusted by {adjustment:+d}" if adjustment else "staff edit"
        )
        # Stock here equals the locked row's value, so saving it is no blind overwrite.
        product.save()
    return product


def product_set_active(*, product_ids: Iterable[UUID], is_active: bool) -> int:
    """Bulk (de)activate products, each with its own history row; returns how many changed."""
    changed = 0
    with transaction.atomic():
        for product in lock_products(product_ids=product_ids).values():
            if product.is_active == is_active:
                continue
            product.is_active = is_active
            product._change_reason = "activated" if is_active else "deactivated"  # type: ignore[attr-defined]
            product.save(update_fields=["is_active", "updated_at"])
            changed += 1
    return changed
