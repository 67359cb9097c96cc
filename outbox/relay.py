"""The outbox relay: claim due rows, publish them, mark them — never inside one transaction.

1. Claim (short transaction): due pending rows whose lease is free and whose aggregate has
   no earlier unpublished event, `FOR UPDATE SKIP LOCKED`, get a lease (token + expiry) and
   one more attempt. Only the lowest unpublished version of an aggregate is ever claimable,
   so events of one aggregate reach the stream in version order, and a failing event holds
   back only its own aggregate.
2. Publish (no transaction): XADD with producer-side dedupe (outbox/sink.py).
3. Mark (short transaction): published only where our lease token still holds; a worker
   whose lease expired and was re-claimed changes nothing (a "fenced" ack).
When the sink is unreachable the breaker opens: leases are handed back with their attempt
refunded, and the relay pauses, so an outage dead-letters nothing.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from outbox import metrics
from outbox.locks import claim_due_events
from outbox.models import OutboxEvent, OutboxStatus
from outbox.sink import PoisonEvent, PublishResult, SinkUnavailable, sink_ping, sink_publish

logger = logging.getLogger(__name__)


class CircuitBreaker:
    """Process-local breaker around the sink: open after a connection failure, probe again
    after `OUTBOX_BREAKER_COOLDOWN` seconds, close on the first success."""

    def __init__(self) -> None:
        self.open_until = 0.0

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    def trip(self) -> None:
        self.open_until = time.monotonic() + settings.OUTBOX_BREAKER_COOLDOWN
        metrics.BREAKER_OPEN.set(1)

    def reset(self) -> None:
        if self.open_until:
            logger.info("outbox sink reachable again; relay resumes")
        self.open_until = 0.0
        metrics.BREAKER_OPEN.set(0)


breaker = CircuitBreaker()


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


def backoff_seconds(attempt: int) -> float:
    """Delay after failed attempt n (1-based): 1, 2, 4, 8, 16 s, each with ±20% jitter."""
    base = settings.OUTBOX_BACKOFF[min(attempt, len(settings.OUTBOX_BACKOFF)) - 1]
    return base * random.uniform(0.8, 1.2)


def outbox_claim(*, limit: int, token: uuid.UUID) -> list[OutboxEvent]:
    ids = claim_due_events(limit=limit, token=token, lease_seconds=settings.OUTBOX_LEASE_SECONDS)
    # Publish in a stable order: oldest first (each aggregate appears at most once).
    return list(OutboxEvent.objects.filter(pk__in=ids).order_by("created_at", "version"))


def relay_once(*, batch_size: int | None = None) -> RelayReport:
    """Claim, publish and mark one batch. Safe to run in any number of processes at once."""
    report = RelayReport()
    if breaker.is_open:
        report.paused = True
        return report
    if breaker.open_until and not sink_ping():  # half-open: probe before claiming anything
        breaker.trip()
        report.paused = True
        return report
    token = uuid.uuid4()
    events = outbox_claim(limit=batch_size or settings.OUTBOX_BATCH_SIZE, token=token)
    report.claimed = len(events)
    if not events:
        breaker.reset()
        return report
    try:
        results = sink_publish(events)
    except SinkUnavailable as exc:
        _hand_back(events=events, token=token, error=str(exc))
        breaker.trip()
        logger.warning("outbox sink unreachable; relay paused", extra={"error": str(exc)})
        report.paused = True
        return report
    breaker.reset()
    _record_outcomes(events=events, results=results, token=token, report=report)
    return report


def relay_until_idle(*, time_budget: float | None = None) -> RelayReport:
    """Relay batches until nothing is due, the sink is down or the time budget is spent."""
    deadline = time.monotonic() + (time_budget or settings.OUTBOX_RELAY_TIME_BUDGET)
    total = RelayReport()
    while True:
        report = relay_once()
        total.add(report)
        if report.paused or report.claimed == 0 or time.monotonic() >= deadline:
            return total


def _hand_back(*, events: list[OutboxEvent], token: uuid.UUID, error: str) -> None:
    """Release our leases and refund the attempts: an outage is nobody's failed attempt."""
    with transaction.atomic():
        OutboxEvent.objects.filter(pk__in=[e.pk for e in events], lease_token=token).update(
            lease_token=None,
            lease_expires_at=None,
            attempts=F("attempts") - 1,
            last_error=f"sink unavailable: {error}"[:2000],
        )


def _record_outcomes(
    *, events: list[OutboxEvent], results: list, token: uuid.UUID, report: RelayReport
) -> None:
    now = timezone.now()
    published = [e for e, r in zip(events, results, strict=True) if isinstance(r, PublishResult)]
    report.duplicates = sum(1 for r in results if isinstance(r, PublishResult) and r.duplicate)
    with transaction.atomic():
        marked = OutboxEvent.objects.filter(
            pk__in=[e.pk for e in published], lease_token=token
        ).update(
            status=OutboxStatus.PUBLISHED,
            published_at=now,
            lease_token=None,
            lease_expires_at=None,
            last_error="",
        )
        report.published = marked
        report.fenced = len(published) - marked
        for event, result in zip(events, results, strict=True):
            if isinstance(result, PublishResult):
                continue
            _record_failure(event=event, error=result, token=token, now=now, report=report)
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
    *, event: OutboxEvent, error: Exception, token: uuid.UUID, now, report: RelayReport
) -> None:
    message = f"{type(error).__name__}: {error}"[:2000]
    out_of_retries = event.attempts > len(settings.OUTBOX_BACKOFF)
    if isinstance(error, PoisonEvent) or out_of_retries:
        changes = {"status": OutboxStatus.DEAD}
        report.dead += 1
        metrics.DEAD_LETTERS.inc()
        logger.error(
            "outbox event dead-lettered", extra={"event_id": str(event.id), "error": message}
        )
    else:
        changes = {"next_attempt_at": now + timedelta(seconds=backoff_seconds(event.attempts))}
        report.retried += 1
        metrics.RETRIES.inc()
    OutboxEvent.objects.filter(pk=event.pk, lease_token=token).update(
        lease_token=None, lease_expires_at=None, last_error=message, **changes
    )
