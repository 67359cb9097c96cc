"""`X-API-Key` authentication for DRF. Product reads are public; order views require a key."""

from __future__ import annotations

from rest_framework import authentication, exceptions, permissions

from orders.selectors import api_client_get_by_key

API_KEY_HEADER = "X-API-Key"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        key = request.headers.get(API_KEY_HEADER)
        if not key:
            return None
        client = api_client_get_by_key(key=key)
        if client is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        return client, key

    def authenticate_header(self, request) -> str:
        # A value here makes DRF answer 401 (not 403) when the key is missing.
        return f'ApiKey header="{API_KEY_HEADER}"'


class HasApiKey(permissions.BasePermission):
    message = f"Send your API key in the {API_KEY_HEADER} header."

    def has_permission(self, request, view) -> bool:
        return request.user is not None and getattr(request.user, "is_authenticated", False)
