"""Writes of the outbox. Domain apps call `outbox_enqueue` inside their own transaction."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from core.request_id import current_request_id
from core.unit_of_work import UnitOfWork
from outbox.models import OutboxEvent, OutboxStatus
from outbox.nudge import relay_nudge_on_commit


@dataclass(frozen=True)
class EventEnvelope:
    type: str
    aggregate_type: str
    aggregate_id: str
    version: int
    payload: dict[str, Any]
    # The version of the type's published schema this payload follows (the emitting app's
    # event_schemas/<type>.v<N>.json); no default, so that no producer forgets it.
    schema_version: int
    occurred_at: datetime = field(default_factory=timezone.now)
    correlation_id: str | None = None


def outbox_enqueue(*, event: EventEnvelope) -> OutboxEvent:
    """Store an event in the caller's transaction: it exists only if the change commits.

    Precondition: called inside transaction.atomic(), with `event.version` assigned under
    the aggregate's row lock (the unique constraint on aggregate+version backs that up).
    Runs no subscriber: the emitter calls `outbox.subscribers.dispatch_in_transaction`.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("outbox_enqueue must run inside the transaction of the change")
    relay_nudge_on_commit()
    row = _outbox_row(event)
    row.save(force_insert=True)
    return row


def outbox_enqueue_in(*, work: UnitOfWork, event: EventEnvelope) -> None:
    """outbox_enqueue for a change sent as one unit of work: the row is one of its
    INSERTs, and the relay is nudged once the work has committed."""
    work.insert("outbox.event", [_outbox_row(event)])
    work.on_commit(relay_nudge_on_commit)


def _outbox_row(event: EventEnvelope) -> OutboxEvent:
    return OutboxEvent(
        type=event.type,
        schema_version=event.schema_version,
        aggregate_type=event.aggregate_type,
        aggregate_id=str(event.aggregate_id),
        version=event.version,
        occurred_at=event.occurred_at,
        correlation_id=event.correlation_id or current_request_id() or "",
        payload=event.payload,
        next_attempt_at=event.occurred_at,
    )


def outbox_retry(*, event_ids: Iterable[UUID]) -> int:
    """Put dead (or discarded) events back in line under the same id, attempts reset."""
    with transaction.atomic():
        return OutboxEvent.objects.filter(
            pk__in=list(event_ids), status__in=[OutboxStatus.DEAD, OutboxStatus.DISCARDED]
        ).update(
            status=OutboxStatus.PENDING,
            attempts=0,
            next_attempt_at=timezone.now(),
            lease_token=None,
            lease_expires_at=None,
        )


def outbox_discard(*, event_ids: Iterable[UUID]) -> int:
    """Give up on dead events: they stay for the record and stop holding back their aggregate."""
    with transaction.atomic():
        return OutboxEvent.objects.filter(pk__in=list(event_ids), status=OutboxStatus.DEAD).update(
            status=OutboxStatus.DISCARDED
        )


def outbox_purge_published(*, older_than: timedelta, batch_size: int = 5000) -> int:
    """Delete published rows older than `older_than`, in batches; pending/dead rows stay."""
    cutoff = timezone.now() - older_than
    deleted_total = 0
    while True:
        with transaction.atomic():
            ids = list(
                OutboxEvent.objects.filter(
                    status=OutboxStatus.PUBLISHED, published_at__lt=cutoff
                ).values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                return deleted_total
            deleted, _ = OutboxEvent.objects.filter(
                pk__in=ids, status=OutboxStatus.PUBLISHED
            ).delete()
        deleted_total += deleted
