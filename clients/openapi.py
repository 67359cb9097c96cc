"""The X-API-Key security scheme in the OpenAPI document (without it, any view using
ApiKeyAuthentication makes `spectacular --fail-on-warn` fail)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension

from clients.authentication import API_KEY_HEADER


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "clients.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": API_KEY_HEADER,
            "description": (
                "An API client's key, issued by staff in the admin or with `manage.py "
                "create_api_client NAME` (shown once; only its hash is stored). Wrong keys "
                "are limited per client address (`API_KEY_FAILURE_RATE_LIMIT`)."
            ),
        }
