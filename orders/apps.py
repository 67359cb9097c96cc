from pathlib import Path

from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    verbose_name = "Orders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from outbox.event_contract import register_event_schemas

        # The published schemas of the events orders emits (orders/events.py).
        register_event_schemas(Path(self.path) / "event_schemas")
