"""Reads of the catalog."""

from __future__ import annotations

from uuid import UUID

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
