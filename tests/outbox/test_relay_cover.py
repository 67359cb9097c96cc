"""The relay covers its nudges (issue 11): a run that finds work keeps polling while it
holds the relay's nudge flag, and web processes that find the flag send no nudge until its
deadline; a run gives its worker process to waiting tasks by handing the cover over."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.db import connection, transaction
from django_redis import get_redis_connection

import outbox.relay
from core import nudge
from core.nudge import NudgeCover
from outbox.nudge import RELAY_TASK
from outbox.relay import relay_lingering
from outbox.tasks import relay_outbox
from tests.orders.redis_spy import RoundTrip, spy_on_redis
from tests.outbox.helpers import (
    enqueue,
    eventually,
    new_aggregate_ids,
    stream_entries,
    stream_length,
)

COVER = 0.6


@pytest.fixture
def round_trips(monkeypatch) -> list[RoundTrip]:
    nudge.broker_breaker.reset()
    return spy_on_redis(monkeypatch)


@pytest.fixture
def relay_settings(settings):
    settings.OUTBOX_RELAY_LINGER = COVER
    settings.OUTBOX_RELAY_POLL_INTERVAL = 0.01
    settings.OUTBOX_RELAY_TIME_BUDGET = 10
    yield settings
    outbox.relay._background.stop()  # a relay thread a test started ends with the test


def web_nudge_arrives(task_name: str) -> None:
    """What a web process's won nudge leaves in Redis: the flag with its deadline."""
    deadline_ms = int(time.time() * 1000) + int(COVER * 1000)
    get_redis_connection("default").set(
        nudge._flag_key(task_name), deadline_ms, px=int(COVER * 1000)
    )


def a_task() -> str:
    return f"tests.covered.{uuid.uuid4().hex}"


def commit_nudging(task_name: str) -> None:
    with transaction.atomic():
        nudge.nudge_on_commit(task_name, quiet=COVER, covered=True)


def flag_asks(round_trips: list[RoundTrip], task_name: str) -> int:
    return sum(1 for trip in round_trips for _, key in trip.commands if task_name in key)


def in_thread(function) -> dict:
    """Run function in a thread with its own database connection; the outcome lands in the
    returned dict ("value" or "error", and "ended" at time.monotonic())."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            outcome["ended"] = time.monotonic()
            connection.close()

    outcome["thread"] = threading.Thread(target=target, daemon=True)
    outcome["thread"].start()
    return outcome


def finished(outcome: dict, timeout: float = 30) -> object:
    eventually(lambda: "ended" in outcome, timeout=timeout, what="the relay run to end")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# --- the web side ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_while_a_run_holds_the_cover_commits_ask_redis_once(round_trips):
    # given a covering task whose flag a run of it holds
    task_name = a_task()
    run = NudgeCover(task_name, seconds=COVER)
    assert run.renew()

    # when commits nudge it for a while, well within the cover
    started = time.monotonic()
    while time.monotonic() - started < COVER / 2:
        commit_nudging(task_name)

    # then the first commit asked for the flag, found it held, and the rest asked nothing
    assert flag_asks(round_trips, task_name) == 1


@pytest.mark.django_db(transaction=True)
def test_once_the_cover_has_expired_a_commit_nudges_again(round_trips):
    # given a covering task whose run held the flag and stopped renewing it
    task_name = a_task()
    assert NudgeCover(task_name, seconds=COVER / 3).renew()
    commit_nudging(task_name)
    asked = flag_asks(round_trips, task_name)

    # when commits keep coming after the flag's deadline
    def asked_again() -> bool:
        commit_nudging(task_name)
        return flag_asks(round_trips, task_name) > asked

    eventually(asked_again, timeout=5, interval=0.02, what="a new nudge")

    # then one took the flag again: it is a web process's (a deadline, no holder)
    value = get_redis_connection("default").get(nudge._flag_key(task_name))
    assert value is not None and b":" not in value


@pytest.mark.django_db(transaction=True)
def test_a_run_answers_the_nudge_that_queued_it_and_keeps_others_out():
    # given a web process's nudge waiting for an answer
    task_name = a_task()
    commit_nudging(task_name)

    # when a run starts, and then another one
    first = NudgeCover(task_name, seconds=COVER)
    second = NudgeCover(task_name, seconds=COVER)

    # then the first takes the cover over, and the second cannot, even with work to do
    assert first.answer()
    assert not second.answer()
    assert not second.renew()
    assert first.renew()


@pytest.mark.django_db(transaction=True)
def test_a_run_without_a_nudge_takes_the_cover_only_when_it_finds_work():
    # given a covering task nobody nudged
    task_name = a_task()
    run = NudgeCover(task_name, seconds=COVER)

    # when a run starts (a beat tick): no cover; when it finds work: the cover
    assert not run.answer() and run.expired
    assert run.renew() and not run.expired


# --- the relay's runs -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_relay_run_with_nothing_to_do_and_no_nudge_stops_at_once(relay_settings):
    # given no events and no nudge (a beat tick on an idle system)
    started = time.monotonic()

    # when the relay task runs
    report = relay_lingering()

    # then it looked once and stopped, without lingering
    assert report.claimed == 0
    assert time.monotonic() - started < COVER / 2


@pytest.mark.django_db(transaction=True)
def test_a_relay_run_that_found_work_picks_up_what_commits_while_it_lingers(relay_settings):
    # given an event, and a relay run started for it
    aggregate, later = new_aggregate_ids(2)
    enqueue(aggregate_ids=[aggregate], versions=[1])
    run = in_thread(relay_lingering)
    eventually(lambda: stream_length() == 1, timeout=10, what="the first event published")

    # when more events commit while it runs, with no nudge (nudges are off in tests)
    enqueue(aggregate_ids=[aggregate, later], versions=[2])
    committed = time.monotonic()
    eventually(lambda: stream_length() == 3, timeout=10, interval=0.01, what="the next ones")
    picked_up = time.monotonic() - committed

    # then the run itself published them, soon, and kept its cover for a while after
    assert "ended" not in run, "the run stopped before the later events"
    assert picked_up < COVER
    report = finished(run)
    assert (report.claimed, report.published) == (3, 3)
    # (renewed when less than 3/4 of it was left: at least that much after the last work)
    assert run["ended"] - committed >= COVER * 0.7
    assert [(e["aggregate_id"], e["version"]) for e in stream_entries()][1:] in (
        [(aggregate, "2"), (later, "2")],
        [(later, "2"), (aggregate, "2")],
    )


@pytest.mark.django_db(transaction=True)
def test_the_relay_task_returns_at_once_and_relays_from_a_thread_of_its_process(relay_settings):
    # given an event
    aggregate = new_aggregate_ids(1)[0]
    enqueue(aggregate_ids=[aggregate], versions=[1])

    # when the relay task runs (in this process, as a worker process runs it), twice
    started = time.monotonic()
    first, second = relay_outbox(), relay_outbox()
    returned = time.monotonic() - started

    # then it returned at once, having started one thread, which relays the event ...
    assert (first, second) == ({"started": True}, {"started": False})
    assert returned < COVER / 2
    eventually(lambda: stream_length() == 1, timeout=10, what="the event published")
    # ... and what commits next, while the task's worker process is free for other tasks
    enqueue(aggregate_ids=[aggregate], versions=[2])
    eventually(lambda: stream_length() == 2, timeout=10, interval=0.01, what="the next one")
    # and once it has found nothing for a cover, the thread ends: the next task starts one
    eventually(lambda: relay_outbox() == {"started": True}, timeout=10, what="the thread's end")


@pytest.mark.django_db(transaction=True)
def test_a_nudge_that_comes_as_the_run_would_stop_is_answered(relay_settings):
    # given a relay run whose cover has expired, about to stop after an empty poll
    enqueue(aggregate_ids=new_aggregate_ids(1), versions=[1])
    asked: list[bool] = []

    def nudged_then_ask(cover: NudgeCover) -> bool:
        if not asked:  # a web process's nudge arrives just then
            web_nudge_arrives(RELAY_TASK)
        asked.append(cover.answer())
        return not asked[-1]

    # when it runs
    report = relay_lingering(may_stop=nudged_then_ask)

    # then it answered the nudge (took its cover and lingered), and stopped only after
    # that cover, with no nudge left unanswered
    assert report.published == 1
    assert asked == [True, False]
