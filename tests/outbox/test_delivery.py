"""Delivery through real Celery worker and beat processes (SPEC §4): committed events reach
the stream exactly once with the whole envelope, rolled-back ones never exist, and two
beats with several workers over thousands of events neither duplicate nor reorder."""

from __future__ import annotations

import pytest
from django.db import transaction

from orders.models import CancelReason
from orders.services import OrderLine, order_cancel, order_create
from outbox.models import OutboxEvent, OutboxStatus
from tests.factories import make_api_client, make_product
from tests.outbox.helpers import (
    assert_delivered_exactly_once_in_order,
    assert_entry_matches_row,
    enqueue,
    eventually,
    new_aggregate_ids,
    status_counts,
    stream_entries,
    stream_length,
)
from tests.redis_relay import RedisRelay


class Rollback(Exception):
    pass


@pytest.mark.django_db(transaction=True)
def test_committed_events_reach_the_stream_once_with_the_whole_envelope_rolled_back_none(
    celery_processes, worker_redis
):
    # given a worker and beat running
    worker = celery_processes.worker()
    beat = celery_processes.beat()
    client, _ = make_api_client()
    product = make_product(stock=50)
    # when one order is rolled back after its event was enqueued, and others commit
    rolled_back = {}
    with pytest.raises(Rollback), transaction.atomic():
        order = order_create(client=client, email="x@example.com", lines=[OrderLine(product.pk, 1)])
        rolled_back["id"] = str(order.pk)
        assert OutboxEvent.objects.filter(aggregate_id=str(order.pk)).exists()
        raise Rollback
    kept = order_create(client=client, email="a@example.com", lines=[OrderLine(product.pk, 2)])
    cancelled = order_create(client=client, email="b@example.com", lines=[OrderLine(product.pk, 3)])
    order_cancel(order_id=cancelled.pk, reason=CancelReason.CUSTOMER_REQUESTED)

    # then the three committed events are delivered, and nothing else
    eventually(
        lambda: status_counts()[OutboxStatus.PUBLISHED] == 3,
        timeout=45,
        what="3 events published",
        alive=[worker, beat],
    )
    assert not OutboxEvent.objects.filter(aggregate_id=rolled_back["id"]).exists()
    entries = stream_entries()
    rows = list(OutboxEvent.objects.order_by("created_at"))
    assert len(rows) == 3
    assert_delivered_exactly_once_in_order(entries, rows)
    assert rolled_back["id"] not in {entry["aggregate_id"] for entry in entries}
    by_id = {entry["id"]: entry for entry in entries}
    for row in rows:
        assert_entry_matches_row(by_id[str(row.id)], row)
    cancelled_types = [e["type"] for e in entries if e["aggregate_id"] == str(cancelled.pk)]
    assert cancelled_types == ["order.created", "order.cancelled"]
    assert by_id[str(rows[0].id)]["aggregate_id"] == str(kept.pk)
    assert all(row.published_at and row.lease_token is None for row in rows)
    assert celery_processes.metric("outbox_published_total") == 3
    # and later relay runs re-publish none of them: a later event is the only newcomer
    later = order_create(client=client, email="c@example.com", lines=[OrderLine(product.pk, 1)])
    eventually(
        lambda: OutboxEvent.objects.filter(
            aggregate_id=str(later.pk), status=OutboxStatus.PUBLISHED
        ).exists(),
        timeout=30,
        what="the later event published",
        alive=[worker, beat],
    )
    assert stream_length() == 4
    assert celery_processes.metric("outbox_published_total") == 4


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_beats_and_three_workers_deliver_thousands_once_and_in_order(
    celery_processes, worker_redis
):
    # given two beats and three workers running at once, the workers' sink through a relay
    # that holds the first publish any of them sends: a lone worker's relay thread would
    # otherwise drain every commit before the others' runs start (it polls every 20 ms),
    # so only a held publish makes the others' work certain rather than likely
    relay = RedisRelay.to(worker_redis.url)
    relay.hold_on(b"EVALSHA")
    processes = [celery_processes.beat(f"beat{n}") for n in (1, 2)]
    processes += [
        celery_processes.worker(
            f"worker{n}",
            OUTBOX_BATCH_SIZE=100,
            EVENT_STREAM_REDIS_URL=relay.url,
            EVENT_STREAM_SOCKET_TIMEOUT="30",
        )
        for n in (1, 2, 3)
    ]
    aggregates = new_aggregate_ids(300)
    try:
        # when 3000 events (versions 1..10 of 300 aggregates) commit in ten transactions
        # (each commit also queues three relay runs, so the workers relay at the same time)
        for version in range(1, 11):
            enqueue(aggregate_ids=aggregates, versions=[version])
            celery_processes.kick_relay(3)
        # and the held publish goes on once another worker has published past it
        eventually(relay.held.is_set, timeout=60, what="a publish held", alive=processes)
        eventually(
            lambda: celery_processes.metric("outbox_published_total") > 0,
            timeout=60,
            what="another worker publishing while one publish is held",
            alive=processes,
            progress=status_counts,
        )
        relay.release()
        # then every one is published, each reaches the stream once, in version order
        eventually(
            lambda: status_counts()[OutboxStatus.PUBLISHED] == 3000,
            timeout=120,
            what="3000 events published",
            interval=0.5,
            alive=processes,
            progress=status_counts,
        )
    finally:
        relay.close()
    entries = stream_entries()
    assert len(entries) == OutboxEvent.objects.count() == 3000
    assert_delivered_exactly_once_in_order(entries, OutboxEvent.objects.all())
    assert status_counts() == {"pending": 0, "published": 3000, "dead": 0, "discarded": 0}
    # and the workers really competed: the held one and at least one other published
    published_by = celery_processes.metric_by_process("outbox_published_total")
    assert sum(published_by.values()) == 3000
    print("published by", published_by)
    assert sum(1 for value in published_by.values() if value) >= 2, published_by
    # and no lease ran out under the held publish (60 s, released within seconds)
    assert celery_processes.metric("outbox_fenced_acks_total") == 0
