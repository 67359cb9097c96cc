"""Writes of the clients app: issue, revoke and rotate API keys.

Every write that can make a key stop working invalidates the processes' key caches after
its commit (clients/key_cache.py): the key is refused everywhere within the cache's bound.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from clients.key_cache import api_key_cache_invalidate_on_commit
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
        revoked = ApiClient.objects.filter(pk=client_id, is_active=True).update(
            is_active=False, revoked_at=timezone.now(), updated_at=timezone.now()
        )
        # Even when it was inactive already: a row deactivated behind the services' back
        # (raw SQL) leaves the caches too.
        api_key_cache_invalidate_on_commit(client_id=client_id)
        return revoked


def api_client_rotate_key(*, client_id) -> str:
    """Give a client a new key (the old one stops working at once); returns the new key."""
    key, prefix = api_key_generate()
    with transaction.atomic():
        ApiClient.objects.filter(pk=client_id).update(
            key_prefix=prefix,
            key_hash=api_key_hash(key),
            is_active=True,
            revoked_at=None,
            updated_at=timezone.now(),
        )
        api_key_cache_invalidate_on_commit(client_id=client_id)
    return key
