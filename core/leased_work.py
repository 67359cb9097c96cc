"""Leased work: rows that say what is owed, worked by any number of processes at once.

One mechanism for every table whose rows are work to do (outbox events to publish, payment
steps to call the provider for, webhooks waiting for their order); each table brings its
own `LeasedWork` policy (which rows are due, in what order, how long a lease lasts, the
retry schedule and whether a row ever gives up) from its app's locks.py.

- Claim: one statement, `FOR UPDATE SKIP LOCKED` (workers never wait on each other), sets
  a lease (token + expiry) and counts an attempt, so the row locks last that statement only
  and the lease keeps other workers away while the work runs with no transaction open (a
  network call). The statement is its own transaction (autocommit: one round trip), and
  can return the claimed rows' columns (`claim_rows`), so a worker needs no second read.
  Work done inside the claiming transaction instead (`lock_due`) needs no lease: its row
  locks are one.
- Complete, release, retry are fenced: `UPDATE ... WHERE lease_token = <ours>`, so a
  worker whose lease ran out and was re-claimed changes nothing.
- Release hands a lease back with its attempt refunded (an outage is nobody's attempt).
- Retry waits the schedule's n-th delay (capped exponential, ±jitter) after attempt n;
  past the schedule's end it waits the last delay again, or, for a policy with a
  `dead` state, buries the row after attempt len(schedule) + 1.
- `run_until_idle` runs batches until nothing is due or a time budget is spent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

from django.db import connection, models, transaction
from django.db.models import F
from django.utils import timezone

T = TypeVar("T")

# `w` is the work table; a policy's `due` and `order_by` are SQL on it. Due times are
# written by the application (now + delay), so they are compared with its clock; leases
# are written and compared with the database's.
_CLAIM = """
WITH due AS (
    SELECT w.id FROM {table} w
    WHERE ({due})
      AND w.next_attempt_at <= %(now)s
      AND (w.lease_expires_at IS NULL OR w.lease_expires_at < now())
    ORDER BY {order_by}
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {table} AS claimed
SET lease_token = %(token)s,
    lease_expires_at = now() + make_interval(secs => %(lease)s),
    attempts = claimed.attempts + 1
FROM due
WHERE claimed.id = due.id
RETURNING """

_LOCK = """
SELECT w.id FROM {table} w
WHERE ({due}) AND w.next_attempt_at <= %(now)s
ORDER BY {order_by}
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

RETRIED = "retried"
DEAD = "dead"


class LeasedWork:
    """The policy of one work table, and the operations on its rows.

    The table has `id`, `attempts` and `next_attempt_at`; a leased one (`lease_seconds`
    given) also `lease_token` and `lease_expires_at`. `backoff` returns the delays in
    seconds after attempts 1, 2, ... (read at each retry: settings may change). `dead`
    holds the changes that bury a row once the schedule is spent (None: it never gives up).
    """

    def __init__(
        self,
        *,
        model: type[models.Model],
        due: str,
        order_by: str,
        backoff: Callable[[], Sequence[float]],
        jitter: float = 0.2,
        lease_seconds: Callable[[], float] | None = None,
        dead: Mapping[str, Any] | None = None,
        error_field: str = "last_error",
    ) -> None:
        self.model = model
        self.backoff = backoff
        self.jitter = jitter
        self.lease_seconds = lease_seconds
        self.dead = dict(dead) if dead is not None else None
        self.error_field = error_field
        table = connection.ops.quote_name(model._meta.db_table)
        self.claim_sql = _CLAIM.format(table=table, due=due, order_by=order_by)
        self.lock_sql = _LOCK.format(table=table, due=due, order_by=order_by)

    # --- taking work ---------------------------------------------------------------------

    def claim(self, *, limit: int, token: UUID) -> list[Any]:
        """Lease up to `limit` due rows, counting an attempt on each; returns their ids.

        Runs its own transaction: call it with none open that holds other locks.
        """
        return [row[0] for row in self.claim_rows(limit=limit, token=token)]

    def claim_rows(
        self, *, limit: int, token: UUID, returning: str = "claimed.id"
    ) -> list[tuple[Any, ...]]:
        """claim(), returning the `returning` columns (SQL on the claimed row, `claimed`) of
        each claimed row, as they are after the claim (attempts counted), in no order.

        Runs its own transaction: call it with none open that holds other locks.
        """
        sql, params = self.claim_statement(limit=limit, token=token, returning=returning)
        return _run_alone(sql, params)

    def claim_statement(
        self, *, limit: int, token: UUID, returning: str = "claimed.id"
    ) -> tuple[str, dict[str, Any]]:
        """The claim's SQL and its parameters (pyformat): what claim() runs, for callers
        that must see the statement itself (a benchmark's EXPLAIN ANALYZE)."""
        if self.lease_seconds is None:
            raise TypeError(f"{self.model.__name__} work has no lease: use lock_due()")
        lease = self.lease_seconds()
        return self.claim_sql + returning, {
            "limit": limit,
            "token": token,
            "lease": lease,
            "now": timezone.now(),
        }

    def lock_due(self, *, limit: int) -> list[Any]:
        """Lock up to `limit` due rows (SKIP LOCKED) for work done in the caller's transaction,
        whose row locks are the lease. Precondition: inside transaction.atomic()."""
        with connection.cursor() as cursor:
            cursor.execute(self.lock_sql, {"limit": limit, "now": timezone.now()})
            return [row[0] for row in cursor.fetchall()]

    # --- handing it back -----------------------------------------------------------------

    def complete(self, *, ids: Iterable[Any], token: UUID, **changes: Any) -> int:
        """Record finished work where our lease still holds; returns how many rows it was.

        One statement: with no transaction open, its own (one round trip)."""
        return self._held(ids, token).update(lease_token=None, lease_expires_at=None, **changes)

    def release(self, *, ids: Iterable[Any], token: UUID, **changes: Any) -> int:
        """Hand our leases back with their attempt refunded: the work was not attempted (the
        dependency was down, or nothing was owed any more by the time we looked)."""
        return self._held(ids, token).update(
            lease_token=None, lease_expires_at=None, attempts=F("attempts") - 1, **changes
        )

    def retry(
        self,
        *,
        pk: Any,
        attempt: int,
        error: str,
        token: UUID | None = None,
        slowest: bool = False,
        give_up: bool = False,
        **changes: Any,
    ) -> str:
        """Record a failed attempt `attempt` (1-based) and when to try again, or bury the row
        (`give_up`, or its schedule is spent); returns RETRIED or DEAD. With `token`, fenced
        and the lease released; without (lock_due work), the attempt is counted here."""
        delay = None if give_up else self.retry_delay(attempt, slowest=slowest)
        if delay is None:
            if self.dead is None:
                raise ValueError(f"{self.model.__name__} work never gives up")
            changes.update(self.dead)
        else:
            changes["next_attempt_at"] = timezone.now() + timedelta(seconds=delay)
        changes[self.error_field] = error[:2000]
        if token is None:
            rows = self.model._default_manager.filter(pk=pk)
            changes["attempts"] = F("attempts") + 1
        else:
            rows = self._held([pk], token)
            changes.update(lease_token=None, lease_expires_at=None)
        rows.update(**changes)
        return RETRIED if delay is not None else DEAD

    def retry_delay(self, attempt: int, *, slowest: bool = False) -> float | None:
        """Seconds to wait after failed attempt `attempt`: the schedule's n-th delay, past its
        end the last one again, ±jitter; None when a policy with a dead state is out of
        retries. `slowest`: the last delay at once (a failure retrying soon will not fix)."""
        schedule = self.backoff()
        if self.dead is not None and attempt > len(schedule) and not slowest:
            return None
        base = schedule[-1] if slowest else schedule[min(attempt, len(schedule)) - 1]
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)

    def _held(self, ids: Iterable[Any], token: UUID) -> models.QuerySet:
        return self.model._default_manager.filter(pk__in=list(ids), lease_token=token)


def _run_alone(sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Run one statement as its own transaction. In autocommit a single statement is one
    already (no BEGIN/COMMIT round trips); inside the caller's atomic block, a savepoint
    keeps a failure from spoiling the caller's transaction, as transaction.atomic() did."""
    if connection.in_atomic_block:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def run_until_idle(
    batch: Callable[[], T],
    *,
    idle: Callable[[T], bool],
    time_budget: float,
    max_batches: int | None = None,
) -> list[T]:
    """Run `batch` at least once, then again until `idle(report)` (nothing was due, or the
    work paused), `time_budget` seconds are spent, or `max_batches` ran; returns the reports.
    The budget keeps one task from holding a worker while a backlog lasts: beat runs the
    task again soon."""
    deadline = time.monotonic() + time_budget
    reports: list[T] = []
    while True:
        report = batch()
        reports.append(report)
        if idle(report) or time.monotonic() >= deadline:
            return reports
        if max_batches is not None and len(reports) >= max_batches:
            return reports
