"""Reads of the clients app."""

from __future__ import annotations

from clients.keys import api_key_hash
from clients.models import ApiClient


def api_client_get_by_key(*, key: str) -> ApiClient | None:
    """The active client holding `key`, or None (unknown or revoked)."""
    return ApiClient.objects.filter(key_hash=api_key_hash(key), is_active=True).first()
