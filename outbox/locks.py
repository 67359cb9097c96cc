"""The only place that takes row locks on outbox rows.

The relay claims rows through `OUTBOX_WORK` (core/leased_work.py): `FOR UPDATE SKIP LOCKED`
inside one short statement that also sets the lease, so the row locks last only that long;
from then on the lease (token + expiry) keeps other workers away, and no transaction is
open while publishing. Only the lowest unpublished version of an aggregate is due, so
events of one aggregate reach the stream in version order, and a failing event holds back
only its own aggregate.
"""

from __future__ import annotations

import uuid

from django.conf import settings

from core.leased_work import LeasedWork
from outbox.models import OutboxEvent, OutboxStatus

OUTBOX_WORK = LeasedWork(
    model=OutboxEvent,
    due="""
        w.status = 'pending'
        AND NOT EXISTS (
            SELECT 1 FROM outbox_outboxevent earlier
            WHERE earlier.aggregate_type = w.aggregate_type
              AND earlier.aggregate_id = w.aggregate_id
              AND earlier.version < w.version
              AND earlier.status IN ('pending', 'dead')
        )
    """,
    order_by="w.next_attempt_at, w.created_at",
    lease_seconds=lambda: settings.OUTBOX_LEASE_SECONDS,
    # 1, 2, 4, 8, 16 s, then the sixth failure is a dead letter.
    backoff=lambda: settings.OUTBOX_BACKOFF,
    dead={"status": OutboxStatus.DEAD},
)


def claim_due_events(*, limit: int, token: uuid.UUID) -> list[uuid.UUID]:
    """Lease up to `limit` due events (only the lowest unpublished version of each
    aggregate), counting an attempt on each; returns their ids. Runs its own transaction."""
    return OUTBOX_WORK.claim(limit=limit, token=token)
