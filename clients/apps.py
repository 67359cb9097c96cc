from django.apps import AppConfig


class ClientsConfig(AppConfig):
    """API clients and their keys: who is calling (orders owns what they call for)."""

    name = "clients"
    verbose_name = "API clients"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        # Registers the X-API-Key security scheme with drf-spectacular.
        from clients import openapi  # noqa: F401
        from clients.key_cache import invalidate_for_saved_or_deleted_client
        from clients.models import ApiClient

        # Cache coherence, not business logic: the services invalidate their own updates;
        # these catch rows saved or deleted through the model from anywhere else.
        post_save.connect(invalidate_for_saved_or_deleted_client, sender=ApiClient)
        post_delete.connect(invalidate_for_saved_or_deleted_client, sender=ApiClient)
