"""The X-API-Key security scheme in the OpenAPI document (without it, any view using
ApiKeyAuthentication makes `spectacular --fail-on-warn` fail)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension

from clients.authentication import API_KEY_HEADER


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "clients.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
