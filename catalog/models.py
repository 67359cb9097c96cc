"""Catalog tables: products with price and sellable stock. No business rules here."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models
from simple_history.models import HistoricalRecords


class Product(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    price = models.DecimalField(max_digits=12, decimal_places=2)
    # Units available to sell; orders change it only with F() under a row lock.
    stock = models.IntegerField(default=0)
    is_active = models.BooleanField(default=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Who changed what and when, for staff edits (orders' F() updates bypass it on purpose).
    history = HistoricalRecords(excluded_fields=["updated_at"])

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(stock__gte=0), name="product_stock_non_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(price__gt=Decimal("0")), name="product_price_positive"
            ),
        ]
        indexes = [
            models.Index(fields=["created_at", "id"], name="product_created_id_idx"),
            # ?search= (substring of upper(name)/upper(sku)) is served by GIN trigram
            # indexes created in migration 0002 where the server has pg_trgm.
        ]

    def __str__(self) -> str:
        return f"{self.sku} — {self.name}"
