"""`X-API-Key` authentication for DRF. Product reads are public; order views require a key.

Failed key lookups are throttled per client address (`API_KEY_FAILURE_RATE_LIMIT`): only
failures count, so a client with a correct key is never slowed by its own traffic; once an
address is over the limit, every key it sends is refused with 429 before it is looked up,
so guessing keys costs the guesser a window per `limit` tries and costs us one Redis call.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework import authentication, exceptions, permissions

from clients.selectors import api_client_get_by_key
from core.client_address import client_throttle_key
from core.ratelimit import (
    RateLimited,
    attach_rate_limit_headers,
    rate_limit_hit,
    rate_limit_peek,
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
        standing = rate_limit_peek(scope=API_KEY_FAILURE_SCOPE, identity=identity, rate=rate)
        if not standing.allowed:
            attach_rate_limit_headers(request, standing)
            raise RateLimited(standing)
        client = api_client_get_by_key(key=key)
        if client is None:
            # Counted atomically: of N concurrent wrong keys against a limit of k, exactly k
            # are told "unknown key" and the rest "too many", whatever passed the peek above.
            failure = rate_limit_hit(scope=API_KEY_FAILURE_SCOPE, identity=identity, rate=rate)
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
