from django.apps import AppConfig


class CommonConfig(AppConfig):
    """Cross-cutting HTTP pieces (errors, request ids, auth, health); it owns no tables."""

    name = "orders_project.common"
    label = "common"
