"""Writes of the clients app: issue, revoke and rotate API keys."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from clients.keys import api_key_generate, api_key_hash
from clients.models import ApiClient


def api_client_create(*, name: str) -> tuple[ApiClient, str]:
    """Create an API client; returns it with its key, which is never retrievable again."""
    key, prefix = api_key_generate()
    client = ApiClient.objects.create(name=name, key_prefix=prefix, key_hash=api_key_hash(key))
    return client, key


def api_client_revoke(*, client_id) -> int:
    """Revoke a client's key at once; returns 1 if it was active, else 0."""
    with transaction.atomic():
        return ApiClient.objects.filter(pk=client_id, is_active=True).update(
            is_active=False, revoked_at=timezone.now(), updated_at=timezone.now()
        )


def api_client_rotate_key(*, client_id) -> str:
    """Give a client a new key (the old one stops working at once); returns the new key."""
    key, prefix = api_key_generate()
    ApiClient.objects.filter(pk=client_id).update(
        key_prefix=prefix,
        key_hash=api_key_hash(key),
        is_active=True,
        revoked_at=None,
        updated_at=timezone.now(),
    )
    return key
