"""The only place that takes row locks on outbox rows.

The relay claims rows with `FOR UPDATE SKIP LOCKED` inside one short statement that also
sets the lease, so the row locks last only that long; from then on the lease (token +
expiry) keeps other workers away, and no transaction is open while publishing.
"""

from __future__ import annotations

import uuid

from django.db import connection, transaction

_CLAIM_SQL = """
WITH due AS (
    SELECT e.id
    FROM outbox_outboxevent e
    WHERE e.status = 'pending'
      AND e.next_attempt_at <= now()
      AND (e.lease_expires_at IS NULL OR e.lease_expires_at < now())
      AND NOT EXISTS (
          SELECT 1 FROM outbox_outboxevent earlier
          WHERE earlier.aggregate_type = e.aggregate_type
            AND earlier.aggregate_id = e.aggregate_id
            AND earlier.version < e.version
            AND earlier.status IN ('pending', 'dead')
      )
    ORDER BY e.next_attempt_at, e.created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox_outboxevent AS claimed
SET lease_token = %(token)s,
    lease_expires_at = now() + make_interval(secs => %(lease)s),
    attempts = claimed.attempts + 1
FROM due
WHERE claimed.id = due.id
RETURNING claimed.id
"""


def claim_due_events(*, limit: int, token: uuid.UUID, lease_seconds: float) -> list[uuid.UUID]:
    """Lease up to `limit` due events (only the lowest unpublished version of each
    aggregate), counting an attempt on each; returns their ids. Runs its own transaction."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, {"limit": limit, "token": token, "lease": lease_seconds})
        return [row[0] for row in cursor.fetchall()]
