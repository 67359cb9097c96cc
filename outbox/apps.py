from django.apps import AppConfig


class OutboxConfig(AppConfig):
    name = "outbox"
    verbose_name = "Event delivery (outbox)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from core.metrics import register_scrape_time_collector
        from outbox.collectors import OutboxCollector

        register_scrape_time_collector(OutboxCollector())
