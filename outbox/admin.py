"""Staff view of event delivery: filter by status, see dead letters' last error, and
retry (same event id) or discard them. Rows are otherwise read-only."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin_paginator import DistinctValuesBySeekFilter, EstimatedCountPaginator
from outbox.event_contract import event_types
from outbox.models import OutboxEvent, OutboxStatus
from outbox.services import outbox_discard, outbox_retry


class EventTypeFilter(admin.AllValuesFieldListFilter):
    """The "type" filter, its choices the event types of the registered event schemas
    rather than a DISTINCT over every row (the stream carries no other types)."""

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        # Any iterable of values serves the filter's choices(); the stubs say QuerySet.
        self.lookup_choices = event_types()  # type: ignore[assignment]


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):
    list_display = (
        "type",
        "aggregate_type",
        "aggregate_id",
        "version",
        "status",
        "attempts",
        "next_attempt_at",
        "short_error",
        "created_at",
        "published_at",
    )
    # aggregate_type leads the index of outbox_unique_aggregate_version: its few values are
    # found by index seeks.
    list_filter = (
        "status",
        ("type", EventTypeFilter),
        ("aggregate_type", DistinctValuesBySeekFilter),
    )
    search_fields = ("=id", "=aggregate_id", "=correlation_id")
    ordering = ("-created_at",)
    actions = ("retry_events", "discard_events")
    list_per_page = 100
    show_full_result_count = False  # counting a large outbox on every page view is costly
    # Nor the page's own count: the planner's estimate, or a count capped at 10,000.
    paginator = EstimatedCountPaginator

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in OutboxEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="last error")
    def short_error(self, event: OutboxEvent) -> str:
        return (event.last_error[:80] + "…") if len(event.last_error) > 80 else event.last_error

    @admin.action(description="Retry selected dead events (same id)", permissions=["change"])
    def retry_events(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        events = list(queryset.filter(status__in=[OutboxStatus.DEAD, OutboxStatus.DISCARDED]))
        count = outbox_retry(event_ids=[event.pk for event in events])
        for event in events:
            self.log_change(request, event, "Retried: back to pending under the same id.")
        self.message_user(
            request, f"{count} event(s) queued for another attempt.", messages.SUCCESS
        )

    @admin.action(description="Discard selected dead events", permissions=["change"])
    def discard_events(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        events = list(queryset.filter(status=OutboxStatus.DEAD))
        count = outbox_discard(event_ids=[event.pk for event in events])
        for event in events:
            self.log_change(request, event, "Discarded: will not be published.")
        self.message_user(request, f"{count} event(s) discarded.", messages.WARNING)
