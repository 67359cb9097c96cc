from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The ground floor as a Django app only for its templates (the offline ReDoc page) and
    its OpenAPI extensions; it owns no tables."""

    name = "core"
    label = "core"

    def ready(self) -> None:
        # Registers the cursor pagination and problem+json pieces with drf-spectacular.
        from core import openapi  # noqa: F401
