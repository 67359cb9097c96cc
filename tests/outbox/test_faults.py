"""Crashes and stale workers (SPEC §4): a worker killed mid-batch loses and duplicates
nothing; a worker paused past its lease cannot mark or re-publish the row another took."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connection
from django.db.models.functions import Now

from outbox import metrics
from outbox.models import OutboxEvent, OutboxStatus
from outbox.relay import RelayReport, _hand_back, _record_outcomes, outbox_claim, relay_once
from outbox.sink import PublishResult, sink_publish
from tests.outbox.helpers import (
    assert_delivered_exactly_once_in_order,
    enqueue,
    eventually,
    new_aggregate_ids,
    status_counts,
    stream_entries,
    stream_length,
)
from tests.redis_relay import RedisRelay

ROW_STATE = ("status", "attempts", "lease_token", "lease_expires_at", "published_at", "last_error")


def _state(pk) -> dict:
    return OutboxEvent.objects.filter(pk=pk).values(*ROW_STATE).get()


def _in_thread(function):
    """Run function in a thread of its own, with its own database connection."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    eventually(lambda: not thread.is_alive(), timeout=30, what="the other relay finishing")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _lease_expired(pk) -> bool:
    return OutboxEvent.objects.filter(pk=pk, lease_expires_at__lt=Now()).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stale_publishes", ["after the other worker", "before its lease ran out"])
def test_a_stale_lease_holder_cannot_mark_or_republish_a_reclaimed_row(settings, stale_publishes):
    # given a row claimed with token A whose lease then ran out
    settings.OUTBOX_LEASE_SECONDS = 1
    [row] = enqueue(aggregate_ids=new_aggregate_ids(1), versions=[1])
    token_a = uuid.uuid4()
    [stale] = outbox_claim(limit=10, token=token_a)
    assert (stale.lease_token, stale.attempts) == (token_a, 1)
    early_results = sink_publish([stale]) if stale_publishes == "before its lease ran out" else None
    eventually(lambda: _lease_expired(row.pk), timeout=5, what="lease expiry")
    fenced_before = metrics.FENCED._value.get()

    # when another worker claims, publishes and marks it meanwhile
    report = _in_thread(relay_once)
    assert (report.claimed, report.published, report.fenced) == (1, 1, 0)
    taken = _state(row.pk)
    assert taken["status"] == OutboxStatus.PUBLISHED
    assert taken["attempts"] == 2

    # and the stale holder then publishes (again) and runs the mark step with token A
    results = early_results or sink_publish([stale])
    assert isinstance(results[0], PublishResult)
    stale_report = RelayReport()
    _record_outcomes(events=[stale], results=results, token=token_a, report=stale_report)
    # even an error report or a hand-back from it would change nothing
    _record_outcomes(
        events=[stale], results=[RuntimeError("late")], token=token_a, report=RelayReport()
    )
    _hand_back(events=[stale], token=token_a, error="late")

    # then the stream has the event once, the stale mark was fenced, the row is untouched
    assert stream_length() == 1
    assert (stale_report.published, stale_report.fenced) == (0, 1)
    assert metrics.FENCED._value.get() == fenced_before + 1
    assert _state(row.pk) == taken
    assert [entry["id"] for entry in stream_entries()] == [str(row.pk)]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_sigkilled_mid_batch_loses_and_duplicates_nothing(celery_processes, worker_redis):
    # given 600 events (10 versions of 60 aggregates) and a worker relaying 5 at a time
    rows = enqueue(aggregate_ids=new_aggregate_ids(60), versions=range(1, 11))
    env = {"OUTBOX_BATCH_SIZE": "5", "OUTBOX_LEASE_SECONDS": "3"}
    beat = celery_processes.beat()
    doomed = celery_processes.worker("doomed", **env)
    # when it is SIGKILLed as soon as the stream has something
    eventually(
        lambda: stream_length() > 0,
        timeout=45,
        interval=0.005,
        what="first events in the stream",
        alive=[doomed, beat],
    )
    doomed.kill()
    in_stream = {entry["id"] for entry in stream_entries()}
    published = OutboxEvent.objects.filter(status="published").values_list("pk", flat=True)
    marked = {str(pk) for pk in published}
    leased = OutboxEvent.objects.filter(status="pending", lease_token__isnull=False).count()
    assert 0 < len(in_stream) < len(rows), "the kill did not land in the middle of the work"
    print(
        f"at the kill: {len(in_stream)} in the stream, {len(marked)} marked published, "
        f"{len(in_stream - marked)} published but not marked, {leased} still leased"
    )
    # and a new worker takes over
    survivor = celery_processes.worker("survivor", **env)
    eventually(
        lambda: status_counts()[OutboxStatus.PUBLISHED] == len(rows),
        timeout=60,
        what="every event published after the crash",
        alive=[survivor, beat],
        progress=status_counts,
    )
    # then every event is in the stream exactly once, in version order per aggregate
    entries = stream_entries()
    assert len(entries) == len(rows)
    assert_delivered_exactly_once_in_order(entries, rows)
    assert status_counts()[OutboxStatus.DEAD] == 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_paused_past_its_lease_cannot_mark_or_republish(celery_processes, worker_redis):
    # given a worker whose publish is held in flight, and which is SIGSTOPped right then
    relay = RedisRelay.to(worker_redis.url)
    try:
        [row] = enqueue(aggregate_ids=new_aggregate_ids(1), versions=[1])
        stale = celery_processes.worker(
            "stale",
            EVENT_STREAM_REDIS_URL=relay.url,
            OUTBOX_LEASE_SECONDS="3",
            EVENT_STREAM_SOCKET_TIMEOUT="30",
        )
        relay.hold_on(b"EVALSHA", on_hold=stale.pause)
        beat = celery_processes.beat()
        eventually(relay.held.is_set, timeout=45, what="the publish held", alive=[stale, beat])
        claimed = _state(row.pk)
        assert claimed["status"] == OutboxStatus.PENDING and claimed["lease_token"] is not None
        # when its lease runs out and another worker takes the row
        eventually(lambda: _lease_expired(row.pk), timeout=10, what="lease expiry")
        other = celery_processes.worker("other")
        eventually(
            lambda: _state(row.pk)["status"] == OutboxStatus.PUBLISHED,
            timeout=45,
            what="the other worker publishing",
            alive=[other, beat],
        )
        taken = _state(row.pk)
        assert taken["attempts"] == 2 and taken["lease_token"] is None
        assert stream_length() == 1
        # and the paused worker resumes: its held publish reaches Redis, then it marks
        relay.release()
        eventually(relay.replied.is_set, timeout=10, what="the late publish answered")
        stale.resume()
        eventually(
            lambda: celery_processes.metric("outbox_fenced_acks_total") == 1,
            timeout=30,
            what="the stale worker's fenced ack",
            alive=[stale],
        )
        # then its publish was deduplicated and its mark changed nothing
        assert "stale outbox lease" in stale.log()
        assert stream_length() == 1
        assert _state(row.pk) == taken
        assert celery_processes.metric("outbox_published_total") == 1
    finally:
        relay.close()
