"""The relay's retry schedule, circuit breaker and metrics, in-process against the real
PostgreSQL and Redis (SPEC §4, §7). Publish failures are real Redis errors: a plain string
key where the stream should be makes XADD fail with WRONGTYPE, a retryable error."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client import REGISTRY

import outbox.sink
from outbox.locks import OUTBOX_WORK
from outbox.models import OutboxEvent, OutboxStatus
from outbox.relay import breaker, relay_once, relay_until_idle
from outbox.sink import PoisonEvent, sink_publish, stream_fields
from scripts.servers import free_port
from tests.outbox.helpers import (
    enqueue,
    eventually,
    new_aggregate_ids,
    status_counts,
    stream_client,
    stream_entries,
)


def _counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_backoff_grows_1_2_4_8_16_with_20_percent_jitter(settings):
    settings.OUTBOX_BACKOFF = [1, 2, 4, 8, 16]
    for attempt, base in enumerate([1, 2, 4, 8, 16], start=1):
        delays = {OUTBOX_WORK.retry_delay(attempt) for _ in range(200)}
        assert min(delays) >= 0.8 * base and max(delays) <= 1.2 * base
        assert max(delays) - min(delays) > 0.2 * base  # jittered, not a fixed delay


@pytest.mark.django_db(transaction=True)
def test_failing_publishes_back_off_1_2_4_8_16_then_go_dead_after_the_sixth(settings):
    # given an event, and a plain string key where the stream should be (XADD: WRONGTYPE)
    settings.OUTBOX_BACKOFF = [1, 2, 4, 8, 16]
    stream_client().set(settings.EVENT_STREAM, "not a stream")
    [row] = enqueue(aggregate_ids=new_aggregate_ids(1), versions=[1])
    retries_before = _counter("outbox_publish_retries_total")
    dead_before = _counter("outbox_dead_letters_total")

    for attempt, base in enumerate([1, 2, 4, 8, 16, None], start=1):
        # when its next attempt is due (as if the delay had passed) and the relay runs
        OutboxEvent.objects.filter(pk=row.pk).update(
            next_attempt_at=timezone.now() - timedelta(seconds=1)
        )
        before = timezone.now()
        report = relay_once()
        after = timezone.now()
        row.refresh_from_db()
        # then the failure is recorded with the real Redis error, and the next delay grows
        assert report.claimed == 1, f"attempt {attempt}"
        assert row.attempts == attempt
        assert "WRONGTYPE" in row.last_error
        assert row.lease_token is None
        if base is not None:
            assert row.status == OutboxStatus.PENDING
            assert before + timedelta(seconds=0.8 * base) <= row.next_attempt_at
            assert row.next_attempt_at <= after + timedelta(seconds=1.2 * base)
            assert relay_once().claimed == 0  # not due again before its delay
        else:  # the sixth failure: out of retries
            assert row.status == OutboxStatus.DEAD
            assert report.dead == 1
    assert _counter("outbox_publish_retries_total") == retries_before + 5
    assert _counter("outbox_dead_letters_total") == dead_before + 1


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_sink_opens_the_breaker_and_spends_no_attempts(settings):
    # given events, a schedule that would dead-letter on the sixth failure at once, and a
    # sink on a port where nothing listens
    settings.OUTBOX_BACKOFF = [0, 0, 0, 0, 0]
    settings.OUTBOX_BREAKER_COOLDOWN = 0.3
    rows = enqueue(aggregate_ids=new_aggregate_ids(3), versions=[1, 2])
    settings.EVENT_STREAM_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    outbox.sink._client.cache_clear()
    published_before = _counter("outbox_published_total")

    # when the relay runs
    report = relay_once()
    # then it claimed, handed the leases back with the attempt refunded, and paused
    assert report.paused and report.claimed == 3
    assert breaker.is_open
    assert _counter("outbox_relay_breaker_open") == 1
    assert relay_once().claimed == 0  # open: claims nothing
    eventually(lambda: not breaker.is_open, timeout=5, what="cooldown over")
    probe = relay_once()  # half-open: probes the sink first, claims nothing
    assert probe.paused and probe.claimed == 0 and breaker.is_open
    # and however often it tries again, no attempt is spent and nothing goes dead
    for _ in range(10):
        breaker.reset()  # force the claim path each time, not just the probe
        assert relay_once().paused
    for row in OutboxEvent.objects.all():
        assert (row.status, row.attempts, row.lease_token) == ("pending", 0, None)
        assert row.last_error.startswith("sink unavailable") or row.version == 2

    # when the sink is back
    settings.EVENT_STREAM_REDIS_URL = settings.REDIS_URL
    outbox.sink._client.cache_clear()
    eventually(lambda: not breaker.is_open, timeout=5, what="cooldown over")
    relay_until_idle()
    # then everything is delivered, each event charged one attempt, the breaker closed
    assert status_counts() == {"pending": 0, "published": 6, "dead": 0, "discarded": 0}
    assert set(OutboxEvent.objects.values_list("attempts", flat=True)) == {1}
    assert [e["id"] for e in stream_entries()] == [
        str(r.pk) for r in sorted(rows, key=lambda r: r.version)
    ]
    assert _counter("outbox_relay_breaker_open") == 0
    assert _counter("outbox_published_total") == published_before + 6


def test_the_size_limit_counts_bytes_not_characters(settings):
    # given an event within the limit in characters but over it in UTF-8 bytes
    event = OutboxEvent(
        type="test.happened",
        aggregate_type="test",
        aggregate_id="agg-1",
        version=1,
        occurred_at=timezone.now(),
        correlation_id="é" * 120,
        payload={},
    )
    fields = stream_fields(event)
    settings.OUTBOX_MAX_EVENT_BYTES = sum(len(value) for value in fields)
    # when it is published, then it is poison (and nothing reached Redis)
    [result] = sink_publish([event])
    assert isinstance(result, PoisonEvent)
    assert stream_entries() == []


@pytest.mark.django_db(transaction=True)
def test_metrics_expose_the_backlog_and_its_age():
    # given two pending events, the older committed a minute ago, and one dead event
    rows = enqueue(aggregate_ids=new_aggregate_ids(3), versions=[1])
    OutboxEvent.objects.filter(pk=rows[0].pk).update(
        created_at=timezone.now() - timedelta(seconds=60)
    )
    OutboxEvent.objects.filter(pk=rows[2].pk).update(status=OutboxStatus.DEAD)
    # when /metrics is scraped
    text = Client().get("/metrics").content.decode()

    # then the backlog gauges are there, read from PostgreSQL
    def sample(name: str) -> float:
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        assert match, f"{name} not exposed"
        return float(match.group(1))

    assert sample("outbox_pending_events") == 2
    assert 59 <= sample("outbox_oldest_pending_age_seconds") < 120
    assert sample("outbox_dead_events") == 1
    for counter in (
        "outbox_published_total",
        "outbox_publish_retries_total",
        "outbox_dead_letters_total",
        "outbox_fenced_acks_total",
    ):
        assert re.search(rf"^{counter} ", text, re.M), f"{counter} not exposed"
