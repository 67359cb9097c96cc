from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    verbose_name = "Payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from outbox.subscribers import subscribe_in_transaction
        from payments.services import payment_open_for_order, payment_stop_for_cancelled_order

        subscribe_in_transaction("order.created", payment_open_for_order)
        subscribe_in_transaction("order.cancelled", payment_stop_for_cancelled_order)
