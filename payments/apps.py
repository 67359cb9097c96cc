from pathlib import Path

from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    verbose_name = "Payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # orders never imports payments: payments plugs its reactions to order events and
        # its read of an order's payment into orders' seams.
        from orders.selectors import register_payment_summary_reader
        from outbox.event_contract import register_event_schemas
        from outbox.subscribers import subscribe_in_transaction
        from payments.reactions import (
            payment_open_for_order,
            payment_open_for_order_in,
            payment_stop_for_cancelled_order,
        )
        from payments.selectors import payment_summaries_for_orders

        subscribe_in_transaction(
            "order.created", payment_open_for_order, in_unit_of_work=payment_open_for_order_in
        )
        subscribe_in_transaction("order.cancelled", payment_stop_for_cancelled_order)
        register_payment_summary_reader(payment_summaries_for_orders)
        # The published schemas of the events payments emits (payments/webhook_effects.py).
        register_event_schemas(Path(self.path) / "event_schemas")
