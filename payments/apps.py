from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    verbose_name = "Payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from outbox.handlers import outbox_subscribe
        from payments.services import payment_open_for_order, payment_stop_for_cancelled_order

        outbox_subscribe("order.created", payment_open_for_order)
        outbox_subscribe("order.cancelled", payment_stop_for_cancelled_order)
