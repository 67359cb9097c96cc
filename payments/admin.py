"""Staff view of payments and the webhook inbox: read-only records of what happened."""

from __future__ import annotations

from django.contrib import admin

from payments.models import Payment, WebhookInboxEntry


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = (
        "order",
        "status",
        "provider_payment_id",
        "amount",
        "currency",
        "attempts",
        "next_attempt_at",
        "updated_at",
    )
    list_filter = ("status",)
    search_fields = ("=order__id", "=provider_payment_id", "email")
    list_select_related = ("order",)


@admin.register(WebhookInboxEntry)
class WebhookInboxAdmin(ReadOnlyAdmin):
    list_display = ("webhook_id", "event_type", "order_id", "status", "note", "received_at")
    list_filter = ("status", "event_type")
    search_fields = ("=webhook_id", "=order_id")
