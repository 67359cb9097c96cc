"""The outbox relay: claim due rows, publish them, mark them — never inside one transaction.

1. Claim (short transaction, outbox/locks.py): due pending rows get a lease and one more
   attempt; only the lowest unpublished version of an aggregate is ever claimable.
2. Publish (no transaction): XADD with producer-side dedupe (outbox/sink.py).
3. Mark (short transaction): published only where our lease token still holds; a worker
   whose lease expired and was re-claimed changes nothing (a "fenced" ack).
When the sink is unreachable the breaker opens: leases are handed back with their attempt
refunded, and the relay pauses, so an outage dead-letters nothing. Claim, fencing, refund,
backoff and dead letters are the leased-work primitive's (core/leased_work.py).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.breaker import Breaker
from core.leased_work import DEAD, run_until_idle
from outbox import metrics
from outbox.locks import OUTBOX_WORK, claim_due_events
from outbox.models import OutboxEvent, OutboxStatus
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

    def add(self, other: RelayReport) -> None:
        for name in ("claimed", "published", "duplicates", "retried", "dead", "fenced"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.paused = self.paused or other.paused


def outbox_claim(*, limit: int, token: uuid.UUID) -> list[OutboxEvent]:
    ids = claim_due_events(limit=limit, token=token)
    # Publish in a stable order: oldest first (each aggregate appears at most once).
    return list(OutboxEvent.objects.filter(pk__in=ids).order_by("created_at", "version"))


def relay_once(*, batch_size: int | None = None) -> RelayReport:
    """Claim, publish and mark one batch. Safe to run in any number of processes at once."""
    report = RelayReport()
    if breaker.is_open:
        report.paused = True
        return report
    if breaker.tripped and not sink_ping():  # half-open: probe before claiming anything
        breaker.trip()
        report.paused = True
        return report
    token = uuid.uuid4()
    events = outbox_claim(limit=batch_size or settings.OUTBOX_BATCH_SIZE, token=token)
    report.claimed = len(events)
    if not events:
        _sink_reachable()
        return report
    try:
        results = sink_publish(events)
    except SinkUnavailable as exc:
        _hand_back(events=events, token=token, error=str(exc))
        breaker.trip()
        logger.warning("outbox sink unreachable; relay paused", extra={"error": str(exc)})
        report.paused = True
        return report
    _sink_reachable()
    _record_outcomes(events=events, results=results, token=token, report=report)
    return report


def relay_until_idle(*, time_budget: float | None = None) -> RelayReport:
    """Relay batches until nothing is due, the sink is down or the time budget is spent."""
    total = RelayReport()
    for report in run_until_idle(
        relay_once,
        idle=lambda report: report.paused or report.claimed == 0,
        time_budget=time_budget or settings.OUTBOX_RELAY_TIME_BUDGET,
    ):
        total.add(report)
    return total


def _sink_reachable() -> None:
    if breaker.reset():
        logger.info("outbox sink reachable again; relay resumes")


def _hand_back(*, events: list[OutboxEvent], token: uuid.UUID, error: str) -> None:
    """Release our leases and refund the attempts: an outage is nobody's failed attempt."""
    with transaction.atomic():
        OUTBOX_WORK.release(
            ids=[e.pk for e in events],
            token=token,
            last_error=f"sink unavailable: {error}"[:2000],
        )


def _record_outcomes(
    *, events: list[OutboxEvent], results: list, token: uuid.UUID, report: RelayReport
) -> None:
    now = timezone.now()
    published = [e for e, r in zip(events, results, strict=True) if isinstance(r, PublishResult)]
    report.duplicates = sum(1 for r in results if isinstance(r, PublishResult) and r.duplicate)
    with transaction.atomic():
        marked = OUTBOX_WORK.complete(
            ids=[e.pk for e in published],
            token=token,
            status=OutboxStatus.PUBLISHED,
            published_at=now,
            last_error="",
        )
        report.published = marked
        report.fenced = len(published) - marked
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
        for event in published:
            metrics.DELIVERY_LAG.observe(max(0.0, (now - event.created_at).total_seconds()))


def _record_failure(
    *, event: OutboxEvent, error: Exception, token: uuid.UUID, report: RelayReport
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
