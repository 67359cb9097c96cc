from django.apps import AppConfig


class ClientsConfig(AppConfig):
    """API clients and their keys: who is calling (orders owns what they call for)."""

    name = "clients"
    verbose_name = "API clients"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the X-API-Key security scheme with drf-spectacular.
        from clients import openapi  # noqa: F401
