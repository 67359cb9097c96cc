"""Test data builders. Each returns saved rows with sensible, unique defaults."""

from __future__ import annotations

import itertools
from decimal import Decimal

from catalog.models import Product
from clients.models import ApiClient
from clients.services import api_client_create

_sequence = itertools.count(1)


def make_product(**overrides) -> Product:
    n = next(_sequence)
    fields = {
        "sku": f"SKU-{n:05d}",
        "name": f"Product {n}",
        "description": "",
        "price": Decimal("10.00"),
        "stock": 10,
        "is_active": True,
    }
    fields.update(overrides)
    return Product.objects.create(**fields)


def make_api_client(name: str | None = None) -> tuple[ApiClient, str]:
    return api_client_create(name=name or f"client-{next(_sequence)}")
