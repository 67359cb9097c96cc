"""Reads of the clients app."""

from __future__ import annotations

from clients.key_cache import CachedClientRow, api_key_cache
from clients.keys import api_key_hash
from clients.models import ApiClient

# What the key cache holds of a row: every concrete field, in model order.
_FIELD_NAMES = [field.attname for field in ApiClient._meta.concrete_fields]


def api_client_get_by_key(*, key: str) -> ApiClient | None:
    """The active client holding `key`, or None (unknown or revoked).

    Answered from this process's key cache when it may be (clients/key_cache.py), else from
    the database. Only a found client is cached: a None is asked again every time, so a key
    issued a moment ago works at once. Every call returns an instance of its own."""
    key_hash = api_key_hash(key)
    cached = api_key_cache.get(key_hash)
    if cached is not None:
        database, values = cached
        return ApiClient.from_db(database, _FIELD_NAMES, values)
    # Before the read: an invalidation that lands while it runs voids the fill.
    ticket = api_key_cache.fill_ticket()
    client = ApiClient.objects.filter(key_hash=key_hash, is_active=True).first()
    if client is not None:
        api_key_cache.put(key_hash, _cached_row(client), tag=str(client.pk), ticket=ticket)
    return client


def _cached_row(client: ApiClient) -> CachedClientRow:
    values = tuple(getattr(client, name) for name in _FIELD_NAMES)
    return client._state.db or "default", values
