"""Staff admin for the orders app: orders (read-only, with items, status history, payment and
event deliveries; cancel through the API's service)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from core.admin_paginator import (
    EstimatedCountPaginator,
    SearchResolvedToIds,
    with_date_buckets_by_seek,
)
from orders.errors import OrderNotCancellable
from orders.events import AGGREGATE_TYPE
from orders.history import StatusActor
from orders.models import CancelReason, Order, OrderItem, OrderStatus, OrderStatusChange
from orders.selectors import PaymentSummary, order_payment_summaries
from orders.services import order_cancel
from outbox.selectors import outbox_events_for_aggregate


class _ReadOnlyInline(admin.TabularInline):
    """Rows of the order's own record: shown, never added, changed or deleted here."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class OrderItemInline(_ReadOnlyInline):
    model = OrderItem
    fields = ("sku", "name", "unit_price", "quantity", "line_total", "product")
    readonly_fields = fields


class OrderStatusChangeInline(_ReadOnlyInline):
    """The order's status history (who, what, when, why), oldest first, newest last."""

    model = OrderStatusChange
    verbose_name = "status change"
    verbose_name_plural = "status history"
    fields = (
        "created_at",
        "old_status",
        "new_status",
        "reason",
        "actor_type",
        "actor_label",
        "actor_id",
        "event_version",
        "correlation_id",
    )
    readonly_fields = fields
    ordering = ("event_version",)

    def has_view_permission(self, request, obj=None) -> bool:
        # The history is part of the order: whoever may see the order sees it, without a
        # grant of its own (staff groups are granted orders, not this table).
        opts = Order._meta
        return any(
            request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")
            for action in ("view", "change")
        )


@admin.register(Order)
class OrderAdmin(SearchResolvedToIds, admin.ModelAdmin):
    list_display = (
        "short_id",
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
    inlines = (OrderItemInline, OrderStatusChangeInline)
    actions = ("cancel_orders",)
    # No full COUNT(*) of a table of millions: an estimated or capped count instead.
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    # A search (the e-mail's trigram index, the id's) runs once per page: SearchResolvedToIds.
    fieldsets = (
        (
            None,
            {"fields": ("id", "status", "cancel_reason", "email", "client", "total", "currency")},
        ),
        (
            "Times",
            {"fields": ("created_at", "updated_at", "expires_at", "paid_at", "cancelled_at")},
        ),
        ("Payment", {"fields": ("payment_state", "payment_provider_id", "payment_links")}),
        ("Events", {"fields": ("event_history",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Order]:
        # The date hierarchy's distinct months/days are found by index seeks, not a sort of
        # every order.
        return with_date_buckets_by_seek(super().get_queryset(request))

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Order._meta.fields] + [
            "event_history",
            "payment_state",
            "payment_provider_id",
            "payment_links",
        ]

    @admin.display(description="id", ordering="id")
    def short_id(self, order: Order) -> str:
        # A UUID wraps over four lines in a narrow column; its first 8 hex digits tell orders
        # apart on one page, the full id is in the tooltip (and on the change page).
        return format_html(
            '<span class="order-id" title="{}">{}…</span>', order.pk, str(order.pk)[:8]
        )

    @staticmethod
    def _payment(order: Order) -> PaymentSummary | None:
        # Read once per page through the hook the payments app registers (orders never
        # imports payments); both payment fields below share it.
        cache = vars(order)
        if "_admin_payment" not in cache:
            cache["_admin_payment"] = order_payment_summaries(order_ids=[order.pk]).get(order.pk)
        return cache["_admin_payment"]

    @admin.display(description="payment status")
    def payment_state(self, order: Order) -> str | None:
        payment = self._payment(order)
        return payment.status if payment else None

    @admin.display(description="provider payment id")
    def payment_provider_id(self, order: Order) -> str | None:
        payment = self._payment(order)
        return payment.provider_payment_id if payment else None

    @admin.display(description="payment records")
    def payment_links(self, order: Order) -> str:
        # Links by URL name, not by import: the orders app knows nothing of payments' models.
        return format_html(
            "<a href='{}?q={}'>payment</a> · <a href='{}?q={}'>webhooks</a>",
            reverse("admin:payments_payment_changelist"),
            order.pk,
            reverse("admin:payments_webhookinboxentry_changelist"),
            order.pk,
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="event deliveries")
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
                order_cancel(
                    order_id=order.pk,
                    reason=CancelReason.STAFF_CANCELLED,
                    actor=StatusActor.for_staff(request.user),
                )
            except OrderNotCancellable:
                refused += 1  # paid meanwhile
                continue
            cancelled += 1
            self.log_change(request, order, "Cancelled by staff.")
        self.message_user(request, f"Cancelled {cancelled} order(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, f"{refused} order(s) were paid meanwhile.", messages.WARNING)
