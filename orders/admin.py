"""Staff admin for the orders app: orders (read-only, with items and event history; cancel
through the API's service)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from orders.errors import OrderNotCancellable
from orders.events import AGGREGATE_TYPE
from orders.models import CancelReason, Order, OrderItem, OrderStatus
from orders.services import order_cancel
from outbox.selectors import outbox_events_for_aggregate


class OrderItemInline(admin.TabularInline):
    model = OrderItem
    fields = ("sku", "name", "unit_price", "quantity", "line_total", "product")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "email",
        "status",
        "cancel_reason",
        "total",
        "currency",
        "client",
        "created_at",
    )
    list_filter = ("status", "cancel_reason", "client")
    search_fields = ("=id", "email")
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    list_select_related = ("client",)
    inlines = (OrderItemInline,)
    actions = ("cancel_orders",)
    show_full_result_count = False
    fieldsets = (
        (
            None,
            {"fields": ("id", "status", "cancel_reason", "email", "client", "total", "currency")},
        ),
        (
            "Times",
            {"fields": ("created_at", "updated_at", "expires_at", "paid_at", "cancelled_at")},
        ),
        ("Payment", {"fields": ("payment_status", "provider_payment_id", "payment_links")}),
        ("Events", {"fields": ("event_history",)}),
    )

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Order._meta.fields] + ["event_history", "payment_links"]

    @admin.display(description="payment records")
    def payment_links(self, order: Order) -> str:
        # Links by URL, not by import: the orders app knows nothing of payments' models.
        return format_html(
            "<a href='/admin/payments/payment/?q={0}'>payment</a> · "
            "<a href='/admin/payments/webhookinboxentry/?q={0}'>webhooks</a>",
            order.pk,
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="event history")
    def event_history(self, order: Order) -> str:
        events = outbox_events_for_aggregate(aggregate_type=AGGREGATE_TYPE, aggregate_id=order.pk)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td><a href='{}'>{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    event.version,
                    reverse("admin:outbox_outboxevent_change", args=[event.pk]),
                    event.type,
                    event.status,
                    event.occurred_at.isoformat(timespec="seconds"),
                    event.correlation_id,
                )
                for event in events
            ),
        )
        return format_html(
            "<table><thead><tr><th>version</th><th>type</th><th>delivery</th><th>occurred</th>"
            "<th>correlation id</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.action(
        description="Cancel selected pending orders (stock is restored)", permissions=["change"]
    )
    def cancel_orders(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        cancelled, refused = 0, 0
        for order in queryset.filter(status=OrderStatus.PENDING_PAYMENT):
            try:
                order_cancel(order_id=order.pk, reason=CancelReason.STAFF_CANCELLED)
            except OrderNotCancellable:
                refused += 1  # paid meanwhile
                continue
            cancelled += 1
            self.log_change(request, order, "Cancelled by staff.")
        self.message_user(request, f"Cancelled {cancelled} order(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, f"{refused} order(s) were paid meanwhile.", messages.WARNING)
