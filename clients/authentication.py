"""`X-API-Key` authentication for DRF. Product reads are public; order views require a key.

Failed key lookups are throttled per client address (`API_KEY_FAILURE_RATE_LIMIT`): only
failures count, so a client with a correct key is never slowed by its own traffic, and a
correct key costs no Redis call at all (nor, once this process has seen it, a database
query: clients/key_cache.py). Every failed lookup is counted in Redis (atomically:
of N concurrent wrong keys against a limit of k, exactly k get 401). Once an address has no
failure left, the process that counted it remembers until when, and refuses every key that
address sends (a right one too) with 429 before looking it up.

The bound: refusals are learnt per process, from the misses that process counted. A process
that has not yet seen the address fail looks up at most one more key from it per window
slot before it learns the refusal (that miss is still counted, and answered 429); so beyond
the `limit` failures a window allows, a guesser gets at most one lookup per web process each
time its oldest failure leaves the window.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework import authentication, exceptions, permissions

from clients.selectors import api_client_get_by_key
from core.client_address import client_throttle_key
from core.ratelimit import (
    RateLimited,
    attach_rate_limit_headers,
    failure_limit_count,
    failure_limit_known_refusal,
)

API_KEY_HEADER = "X-API-Key"
API_KEY_FAILURE_SCOPE = "api_key_failures"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        key = request.headers.get(API_KEY_HEADER)
        if not key:
            return None
        identity = f"ip:{client_throttle_key(request)}"
        rate = settings.API_KEY_FAILURE_RATE_LIMIT
        refusal = failure_limit_known_refusal(
            scope=API_KEY_FAILURE_SCOPE, identity=identity, rate=rate
        )
        if refusal is not None:
            attach_rate_limit_headers(request, refusal)
            raise RateLimited(refusal)
        client = api_client_get_by_key(key=key)
        if client is None:
            # Counted atomically: of N concurrent wrong keys against a limit of k, exactly k
            # are told "unknown key" and the rest "too many", whatever passed the check above.
            failure = failure_limit_count(scope=API_KEY_FAILURE_SCOPE, identity=identity, rate=rate)
            attach_rate_limit_headers(request, failure)
            if not failure.allowed:
                raise RateLimited(failure)
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        return client, key

    def authenticate_header(self, request) -> str:
        # A value here makes DRF answer 401 (not 403) when the key is missing.
        return f'ApiKey header="{API_KEY_HEADER}"'


class HasApiKey(permissions.BasePermission):
    message = f"Send your API key in the {API_KEY_HEADER} header."

    def has_permission(self, request, view) -> bool:
        return request.user is not None and getattr(request.user, "is_authenticated", False)
