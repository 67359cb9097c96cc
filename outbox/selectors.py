"""Reads of the outbox."""

from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet

from outbox.models import OutboxEvent


def outbox_events_for_aggregate(
    *, aggregate_type: str, aggregate_id: UUID | str
) -> QuerySet[OutboxEvent]:
    return OutboxEvent.objects.filter(
        aggregate_type=aggregate_type, aggregate_id=str(aggregate_id)
    ).order_by("version")
