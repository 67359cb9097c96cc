from django.apps import AppConfig


class CommonConfig(AppConfig):
    """Cross-cutting HTTP pieces (errors, request ids, auth, health); it owns no tables."""

    name = "orders_project.common"
    label = "common"

    def ready(self) -> None:
        # Registers the X-API-Key security scheme with drf-spectacular.
        from orders_project.common import openapi  # noqa: F401
