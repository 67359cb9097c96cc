"""The outbox relay: claim due rows, publish them, mark them — never inside one transaction.

1. Claim (one statement, the policy in outbox/locks.py): due pending rows get a lease and
   one more attempt, and come back as plain tuples (no ORM objects; the payload as the
   JSON text PostgreSQL holds). Only the lowest unpublished version of an aggregate is
   ever claimable, so a batch has at most one event per aggregate, and no two workers
   ever hold events of one aggregate at once.
2. Publish (no transaction): the whole batch in one script call, XADD with producer-side
   dedupe (outbox/sink.py).
3. Mark (one statement): published only where our lease token still holds; a worker
   whose lease expired and was re-claimed changes nothing (a "fenced" ack).
Batches overlap (`_Relay`): a thread publishes and marks one batch on its own database
connection while the next one is claimed. When the sink is unreachable the breaker
opens: leases are handed back with their attempt refunded, and the relay pauses, so an
outage dead-letters nothing. Claim, fencing, refund, backoff and dead letters are the
leased-work primitive's (core/leased_work.py).

The relay task starts `relay_lingering` in a thread of its worker process and returns: the
run keeps polling while it finds work and for OUTBOX_RELAY_LINGER seconds after, holding
the relay's nudge cover (core/nudge.py), so commits of a busy period are picked up within
a poll interval, their nudges cost web processes nothing, and other tasks of the worker
process neither wait for the relay nor hold it up.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from celery.signals import worker_process_shutdown
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from core.breaker import Breaker
from core.db_metrics import flush_statement_tallies
from core.leased_work import DEAD
from core.nudge import NudgeCover
from outbox import metrics
from outbox.locks import OUTBOX_WORK
from outbox.models import OutboxStatus
from outbox.nudge import RELAY_TASK
from outbox.sink import PoisonEvent, PublishResult, SinkUnavailable, sink_ping, sink_publish

logger = logging.getLogger(__name__)

# Around the sink: open after a connection failure, probe again after
# OUTBOX_BREAKER_COOLDOWN seconds, close on the first success.
breaker = Breaker(
    cooldown=lambda: settings.OUTBOX_BREAKER_COOLDOWN,
    on_change=lambda is_open: metrics.BREAKER_OPEN.set(int(is_open)),
)


@dataclass
class RelayReport:
    claimed: int = 0
    published: int = 0
    duplicates: int = 0
    retried: int = 0
    dead: int = 0
    fenced: int = 0
    paused: bool = False

    @property
    def idle(self) -> bool:
        """Nothing claimed and nothing settled: a step that marked a batch may have made
        the next versions of its aggregates due, so it is not idle."""
        return not (self.claimed or self.published or self.retried or self.dead or self.fenced)

    def add(self, other: RelayReport) -> None:
        for name in ("claimed", "published", "duplicates", "retried", "dead", "fenced"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.paused = self.paused or other.paused


@dataclass(slots=True)
class ClaimedEvent:
    """An outbox row as the relay claimed it: what publishing and marking need."""

    id: str
    type: str
    aggregate_type: str
    aggregate_id: str
    version: int
    occurred_at_iso: str  # as datetime.isoformat() writes it, in UTC
    correlation_id: str
    payload_json: str  # PostgreSQL's text of the jsonb: published as it is
    attempts: int  # this attempt included
    created_at_epoch: float  # the commit (roughly): for the lag metric and the order
    schema_version: int
    lease_token: uuid.UUID

    @classmethod
    def from_row(cls, row: tuple[Any, ...], *, lease_token: uuid.UUID) -> ClaimedEvent:
        """From the claim's _CLAIMED_COLUMNS, in their order."""
        (id_, type_, aggregate_type, aggregate_id, version, occurred_at_iso) = row[:6]
        (correlation_id, payload_json, attempts, created_at_epoch, schema_version) = row[6:]
        return cls(
            id=id_,
            type=type_,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            version=version,
            occurred_at_iso=occurred_at_iso,
            correlation_id=correlation_id,
            payload_json=payload_json,
            attempts=attempts,
            created_at_epoch=created_at_epoch,
            schema_version=schema_version,
            lease_token=lease_token,
        )

    @property
    def pk(self) -> str:
        return self.id

    @property
    def occurred_at(self) -> datetime:
        return datetime.fromisoformat(self.occurred_at_iso)

    @property
    def payload(self) -> Any:
        return json.loads(self.payload_json)


# The claimed rows' columns, in ClaimedEvent's order (lease_token is ours). Text and
# numbers only: loading a timestamptz or a jsonb into Python objects costs more than the
# rest of an event's trip, and the stream wants text anyway.
_CLAIMED_COLUMNS = r"""
    claimed.id::text, claimed.type, claimed.aggregate_type, claimed.aggregate_id,
    claimed.version,
    regexp_replace(
        to_char(claimed.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
        '\.000000$', ''
    ) || '+00:00',
    claimed.correlation_id, claimed.payload::text, claimed.attempts,
    extract(epoch FROM claimed.created_at)::float8, claimed.schema_version
"""


def outbox_claim(*, limit: int, token: uuid.UUID) -> list[ClaimedEvent]:
    """Lease up to `limit` due events (only the lowest unpublished version of each
    aggregate), counting an attempt on each; one statement, its own transaction."""
    rows = OUTBOX_WORK.claim_rows(limit=limit, token=token, returning=_CLAIMED_COLUMNS)
    # Publish in a stable order: oldest first (each aggregate appears at most once).
    rows.sort(key=lambda row: (row[9], row[4]))
    return [ClaimedEvent.from_row(row, lease_token=token) for row in rows]


def relay_once(*, batch_size: int | None = None) -> RelayReport:
    """Claim, publish and mark one batch. Safe to run in any number of processes at once."""
    relay = _Relay(batch_size=batch_size or settings.OUTBOX_BATCH_SIZE)
    report = relay.step()
    report.add(relay.finish())
    return report


def relay_until_idle(*, time_budget: float | None = None) -> RelayReport:
    """Relay batches until nothing is due, the sink is down or the time budget is spent."""
    deadline = time.monotonic() + (time_budget or settings.OUTBOX_RELAY_TIME_BUDGET)
    relay = _Relay(batch_size=settings.OUTBOX_BATCH_SIZE)
    total = RelayReport()
    while True:
        report = relay.step()
        total.add(report)
        if report.paused or report.idle or time.monotonic() >= deadline:
            total.add(relay.finish())
            return total


def relay_lingering(
    *,
    stopping: threading.Event | None = None,
    may_stop: Callable[[NudgeCover], bool] | None = None,
) -> RelayReport:
    """Relay until nothing is due, and while this run holds the relay's nudge cover, keep
    polling every OUTBOX_RELAY_POLL_INTERVAL seconds.

    The cover is taken when a web process's nudge waits for an answer, and renewed while
    batches find work, for OUTBOX_RELAY_LINGER seconds at a time; web processes that see
    it send no nudge until its deadline. So the run stops only after a poll that began
    once the cover had expired found nothing and `may_stop` agrees (by default: no nudge
    waits for an answer), when the sink is down, or when `stopping` is set. A run that
    another run's cover keeps from lingering relays until idle, for at most
    OUTBOX_RELAY_TIME_BUDGET seconds without the cover.
    """
    may_stop = may_stop or (lambda cover: not cover.answer())
    cover = NudgeCover(RELAY_TASK, seconds=settings.OUTBOX_RELAY_LINGER)
    cover.answer()  # a nudge waiting for an answer: its cover is ours to keep
    relay = _Relay(batch_size=settings.OUTBOX_BATCH_SIZE)
    total = RelayReport()
    budget_ends = time.monotonic() + settings.OUTBOX_RELAY_TIME_BUDGET
    while not (stopping and stopping.is_set()):
        after_cover = cover.expired
        report = relay.step()
        total.add(report)
        if report.paused or (after_cover and report.idle and may_stop(cover)):
            break
        if cover.held:
            budget_ends = time.monotonic() + settings.OUTBOX_RELAY_TIME_BUDGET
        elif time.monotonic() >= budget_ends:
            break
        if report.claimed and cover.due_for_renewal():
            cover.renew()
        if report.claimed < relay.batch_size:  # caught up: wait for more
            time.sleep(settings.OUTBOX_RELAY_POLL_INTERVAL)
    total.add(relay.finish())
    return total


class _BackgroundRelay:
    """The relay task's lingering, in a thread of the worker process: the task returns at
    once, so whatever else the process runs meanwhile (saga steps, other tasks) never
    holds the relay up, and the relay never holds them up. At most one such thread per
    process; the cover lets one of them linger across all processes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def ensure(self) -> bool:
        """Start the thread unless this process has one relaying; returns whether it did."""
        with self._lock:
            if self._thread is not None:
                return False
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
            self._thread.start()
            return True

    def stop(self, timeout: float = 5.0) -> None:
        """Let the thread finish its batch and end (worker shutdown)."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            self._stopping.set()
            thread.join(timeout)

    def forget(self) -> None:
        """In a forked child: the parent's thread is not there."""
        self._lock = threading.Lock()
        self._thread = None

    def _run(self) -> None:
        try:
            relay_lingering(stopping=self._stopping, may_stop=self._may_stop)
        except Exception:  # the cover expires by itself; beat and nudges start a new run
            logger.exception("outbox relay thread failed")
        finally:
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None
            flush_statement_tallies()
            connection.close()

    def _may_stop(self, cover: NudgeCover) -> bool:
        # Decided under the lock: a relay task arriving after this starts a new thread, one
        # arriving before found this one, and its nudge is answered here.
        with self._lock:
            if cover.answer():
                return False
            self._thread = None
            return True


_background = _BackgroundRelay()


def relay_in_background() -> bool:
    """The relay task: make sure this process relays (lingering in a thread, see
    relay_lingering). Returns whether it started the thread."""
    return _background.ensure()


@worker_process_shutdown.connect
def _stop_background_relay(**kwargs: Any) -> None:
    _background.stop()


atexit.register(_stop_background_relay)


class _Relay:
    """Batch after batch, two PostgreSQL connections and Redis at work at once: while the
    relay's thread publishes a batch and marks it (on that thread's own connection), this
    one claims the next. Safe, because a claimed batch holds the lowest pending version of
    each of its aggregates: the next claim cannot take a later version of any of them
    before the batch is marked; and every mark is fenced by its batch's lease token.
    """

    def __init__(self, *, batch_size: int) -> None:
        self.batch_size = batch_size
        self.landing: Future[RelayReport] | None = None

    def step(self) -> RelayReport:
        """Claim the next batch while the one before lands (published and marked), then
        send the new one on its way. `claimed` counts the new batch; the rest, the landed
        one."""
        report = RelayReport()
        if not _sink_usable():
            report.add(self.finish())
            report.paused = True
            return report
        token = uuid.uuid4()
        events = outbox_claim(limit=self.batch_size, token=token)
        report.claimed = len(events)
        landed = self._landed()
        if landed is not None:
            report.add(landed)
            if landed.paused:  # the sink went down under that batch: not this one's turn
                if events:
                    _hand_back(events=events, token=token, error="sink paused")
                return report
        if events:
            self.landing = _lander().submit(_land, events=events, token=token)
        elif landed is None:
            _sink_reachable()
        return report

    def finish(self) -> RelayReport:
        """Wait for the batch in flight to land; the thread's connection is not kept."""
        report = self._landed() or RelayReport()
        try:
            future = _lander().submit(_close_connection)
        except RuntimeError:
            # "cannot schedule new futures": the process is exiting (a worker's shutdown),
            # and the landing thread's connection ends with it. Only submit's: an error
            # closing the connection is the caller's to see.
            pass
        else:
            future.result()
        return report

    def _landed(self) -> RelayReport | None:
        landing, self.landing = self.landing, None
        return landing.result() if landing is not None else None


def _land(*, events: list[ClaimedEvent], token: uuid.UUID) -> RelayReport:
    """Publish a claimed batch and record the outcome (the relay's thread)."""
    report = RelayReport()
    try:
        results = sink_publish(events)
    except SinkUnavailable as exc:
        _hand_back(events=events, token=token, error=str(exc))
        breaker.trip()
        logger.warning("outbox sink unreachable; relay paused", extra={"error": str(exc)})
        report.paused = True
        return report
    _sink_reachable()
    try:
        _record_outcomes(events=events, results=results, token=token, report=report)
    except DatabaseError:
        connection.close()  # this thread's: no request or task end would recycle it
        raise
    return report


def _close_connection() -> None:
    connection.close()  # (the calling thread's)


@cache
def _lander() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-land")


# A forked child (a Celery pool process) starts without the parent's threads.
os.register_at_fork(after_in_child=_lander.cache_clear)
os.register_at_fork(after_in_child=_background.forget)


def _sink_usable() -> bool:
    """False while the breaker is open, or half-open and the sink still does not answer
    (probed before anything is claimed)."""
    if breaker.is_open:
        return False
    if breaker.tripped and not sink_ping():
        breaker.trip()
        return False
    return True


def _sink_reachable() -> None:
    if breaker.reset():
        logger.info("outbox sink reachable again; relay resumes")


def _hand_back(*, events: list[ClaimedEvent], token: uuid.UUID, error: str) -> None:
    """Release our leases and refund the attempts: an outage is nobody's failed attempt."""
    with transaction.atomic():
        OUTBOX_WORK.release(
            ids=[e.pk for e in events],
            token=token,
            last_error=f"sink unavailable: {error}"[:2000],
        )


def _record_outcomes(
    *, events: list[ClaimedEvent], results: list, token: uuid.UUID, report: RelayReport
) -> None:
    now = timezone.now()
    published = [e for e, r in zip(events, results, strict=True) if isinstance(r, PublishResult)]
    report.duplicates = sum(1 for r in results if isinstance(r, PublishResult) and r.duplicate)
    if len(published) == len(events):  # the usual batch: one statement, no transaction
        _mark_published(published=published, token=token, now=now, report=report)
    else:
        with transaction.atomic():
            _mark_published(published=published, token=token, now=now, report=report)
            for event, result in zip(events, results, strict=True):
                if not isinstance(result, PublishResult):
                    _record_failure(event=event, error=result, token=token, report=report)
    metrics.PUBLISHED.inc(report.published)
    if report.fenced:
        metrics.FENCED.inc(report.fenced)
        logger.warning(
            "stale outbox lease: another worker owns these rows now",
            extra={"fenced": report.fenced},
        )
    if report.published:
        # Lag from commit to stream, for the events this batch delivered.
        now_epoch = now.timestamp()
        for event in published:
            metrics.DELIVERY_LAG.observe(max(0.0, now_epoch - event.created_at_epoch))


def _mark_published(
    *, published: list[ClaimedEvent], token: uuid.UUID, now: datetime, report: RelayReport
) -> None:
    if not published:
        return
    marked = OUTBOX_WORK.complete(
        ids=[e.pk for e in published],
        token=token,
        status=OutboxStatus.PUBLISHED,
        published_at=now,
        last_error="",
    )
    report.published = marked
    report.fenced = len(published) - marked


def _record_failure(
    *, event: ClaimedEvent, error: Exception, token: uuid.UUID, report: RelayReport
) -> None:
    message = f"{type(error).__name__}: {error}"
    outcome = OUTBOX_WORK.retry(
        pk=event.pk,
        token=token,
        attempt=event.attempts,
        error=message,
        give_up=isinstance(error, PoisonEvent),
    )
    if outcome == DEAD:
        report.dead += 1
        metrics.DEAD_LETTERS.inc()
        logger.error(
            "outbox event dead-lettered", extra={"event_id": str(event.id), "error": message[:2000]}
        )
    else:
        report.retried += 1
        metrics.RETRIES.inc()
