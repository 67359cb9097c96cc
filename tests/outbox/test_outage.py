"""A Redis outage longer than the whole retry schedule dead-letters nothing (SPEC §4): the
relay pauses (circuit breaker) instead of spending attempts, and once Redis is back every
event is delivered in order and the backlog drains to zero.

The schedule is shrunk to 1,1,1,1,1 s for speed, so an 8 s outage outlasts it. Two drills:
Redis as everything (broker, beat's lock and the sink) goes away, and only the sink goes
away while beat keeps triggering the relay, which is what exercises the breaker.
"""

from __future__ import annotations

import time

import pytest

from outbox.models import OutboxEvent, OutboxStatus
from scripts.servers import free_port, start_redis
from tests.event_contract import stop_after_checking_streams
from tests.outbox.helpers import (
    assert_delivered_exactly_once_in_order,
    enqueue,
    eventually,
    new_aggregate_ids,
    status_counts,
    stream_entries,
    use_redis,
)

OUTAGE_SECONDS = 8.0  # longer than the whole (shrunk) backoff schedule of 5 s
RELAY_ENV = {"OUTBOX_BACKOFF": "1,1,1,1,1", "OUTBOX_BREAKER_COOLDOWN": "1"}


@pytest.fixture
def outage_redis(tmp_path):
    """The Redis this test stops and starts again (same port, empty: no persistence)."""
    data_dir = tmp_path / "outage-redis"
    server = start_redis(data_dir, free_port())
    yield server
    stop_after_checking_streams(server)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("down", ["everything", "sink only"])
def test_an_outage_longer_than_the_retry_schedule_dead_letters_nothing(
    outage_redis, private_redis, celery_processes, settings, down
):  # (fixture order: the processes stop before the Redis servers do)
    # given worker and beat using the outage Redis as sink (and as broker for "everything")
    use_redis(settings, private_redis.url if down == "sink only" else outage_redis.url)
    settings.EVENT_STREAM_REDIS_URL = outage_redis.url
    worker = celery_processes.worker(**RELAY_ENV)
    beat = celery_processes.beat(**RELAY_ENV)
    before = enqueue(aggregate_ids=new_aggregate_ids(5), versions=[1, 2])
    eventually(
        lambda: status_counts()[OutboxStatus.PUBLISHED] == len(before),
        timeout=45,
        what="delivery before the outage",
        alive=[worker, beat],
        progress=status_counts,
    )

    # when Redis goes away for longer than the schedule while events keep committing
    outage_redis.stop()
    during = []
    aggregates = new_aggregate_ids(10)
    outage_ends = time.monotonic() + OUTAGE_SECONDS
    for version in (1, 2, 3):
        during += enqueue(aggregate_ids=aggregates, versions=[version])
        time.sleep(0.5)  # commits spread over the outage, so the relay meets them down
    while time.monotonic() < outage_ends:  # the outage itself: watch that nothing dies
        assert status_counts()[OutboxStatus.DEAD] == 0
        assert worker.is_running(), "the worker died while Redis was down"
        assert beat.is_running(), "beat died while Redis was down"
        time.sleep(0.2)
    waiting = OutboxEvent.objects.filter(pk__in=[e.pk for e in during], status="pending")
    assert waiting.count() == len(during)
    restarted = start_redis(outage_redis.data_dir, outage_redis.port)
    outage_redis.pid = restarted.pid

    # then everything is delivered once and in order, nothing went dead, no backlog is left
    eventually(
        lambda: status_counts()[OutboxStatus.PENDING] == 0,
        timeout=60,
        what="backlog drained after Redis returned",
        alive=[worker, beat],
        progress=status_counts,
    )
    assert status_counts() == {
        "pending": 0,
        "published": len(before) + len(during),
        "dead": 0,
        "discarded": 0,
    }
    entries = stream_entries()  # the restarted Redis came back empty: only `during` is there
    assert_delivered_exactly_once_in_order(entries, during)
    assert celery_processes.metric("outbox_dead_letters_total") == 0
    # an outage is nobody's failed attempt: each event was charged exactly one attempt
    assert set(OutboxEvent.objects.values_list("attempts", flat=True)) == {1}
