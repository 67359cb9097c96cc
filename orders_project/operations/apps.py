from django.apps import AppConfig


class OperationsConfig(AppConfig):
    """Read-only health page for staff. Owns no tables, only its view permission."""

    name = "orders_project.operations"
    label = "operations"
    verbose_name = "Operations"
