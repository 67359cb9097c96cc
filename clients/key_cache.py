"""Each process's cache of API keys: a known `X-API-Key` costs no database round trip.

Maps a key's SHA-256 to the row of the active client holding it, tagged with the client's
id (core/invalidated_cache.py has the mechanism). Whatever makes a key stop working, or
changes its client's row, calls `api_key_cache_invalidate_on_commit` in its transaction:
the services (revoke, rotate), and for instance saves and deletes from anywhere (the admin's
rename, a shell) the model signals connected in `ClientsConfig.ready`. So a revoked,
rotated, deactivated or deleted key is refused by every process at most
`API_KEY_CACHE_BOUND` seconds (1 s by default) after the commit, normally within a few
milliseconds. Unknown and revoked keys are never cached: a key issued a moment ago works
at once, and every wrong key still reaches the database and the failure throttle.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django_redis import get_redis_connection

from core.invalidated_cache import CacheSettings, InvalidatedCache

# (database alias, the row's concrete field values in model order)
CachedClientRow = tuple[str, tuple[Any, ...]]


def _cache_settings() -> CacheSettings:
    return CacheSettings(
        # Pub/sub channels are server-wide (no database number): the deployment's prefix
        # keeps two deployments, or two test runs, on one Redis apart.
        channel=f"{settings.CACHES['default']['KEY_PREFIX']}:clients:api-key-invalidations",
        max_entries=settings.API_KEY_CACHE_MAX_ENTRIES,
        bound=settings.API_KEY_CACHE_BOUND,
        max_age=settings.API_KEY_CACHE_MAX_AGE,
    )


api_key_cache: InvalidatedCache[CachedClientRow] = InvalidatedCache(
    name="api-keys",
    settings=_cache_settings,
    # The Redis of the cache and the rate limits (django-redis "default").
    redis_client=lambda: get_redis_connection("default"),
)


def api_key_cache_invalidate_on_commit(*, client_id: Any) -> None:
    """The client's cached key leaves this process now and every process once the current
    transaction commits."""
    api_key_cache.invalidate_on_commit(str(client_id))


def invalidate_for_saved_or_deleted_client(sender, instance, created: bool = False, **kwargs):
    """post_save / post_delete receiver (connected in ClientsConfig.ready): a row written
    through the model, not a service (the admin's rename, a shell, a cascade), leaves the
    caches too. A new row has nothing cached."""
    if not created:
        api_key_cache_invalidate_on_commit(client_id=instance.pk)
