"""API clients: who is calling. Only a SHA-256 of each key is stored, never the key."""

from __future__ import annotations

import uuid

from django.db import models


class ApiClient(models.Model):
    """A consumer of the API. Only a SHA-256 of its key is stored, never the key."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    # The key's public prefix, shown in the admin so staff can tell keys apart.
    key_prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        # The table and its permissions predate this app (they were the orders app's):
        # keeping the table name moved the model without copying a row (migrations
        # orders 0005 / clients 0001, which also re-label the content type, so every
        # permission and group grant stays).
        db_table = "orders_apiclient"
        ordering = ["name"]
        verbose_name = "API client"

    def __str__(self) -> str:
        return self.name

    # DRF treats request.user as the authenticated principal.
    @property
    def is_authenticated(self) -> bool:
        return True
