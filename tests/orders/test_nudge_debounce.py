"""Nudges cost little Redis (issue 11): a commit's nudges take their flags in one round
trip, and per process a burst of commits asks for a task's flag once per debounce window;
a commit after the window asks again."""

from __future__ import annotations

import time
import uuid

import pytest
from django.db import transaction

from core import nudge
from tests.orders.redis_spy import RoundTrip, spy_on_redis
from tests.polling import eventually

DEBOUNCE_SECONDS = nudge._DEBOUNCE_MS / 1000


@pytest.fixture
def round_trips(monkeypatch) -> list[RoundTrip]:
    nudge.broker_breaker.reset()
    return spy_on_redis(monkeypatch)


def flag_requests(round_trips: list[RoundTrip], task_name: str) -> list[float]:
    """When the flag of `task_name` was asked for (SET NX), one entry per request."""
    return [
        trip.when
        for trip in round_trips
        for name, key in trip.commands
        if name == "SET" and task_name in key
    ]


def commit_nudging(*task_names: str) -> None:
    with transaction.atomic():
        for task_name in task_names:
            nudge.nudge_on_commit(task_name)


def a_task() -> str:
    return f"tests.nudged.{uuid.uuid4().hex}"


@pytest.mark.django_db(transaction=True)
def test_a_commit_nudging_two_tasks_takes_both_flags_in_one_round_trip(round_trips):
    # given two tasks nobody has nudged
    relay, steps = a_task(), a_task()

    # when one transaction commits nudging both
    commit_nudging(relay, steps)

    # then both flags were asked for, in one round trip
    assert len(flag_requests(round_trips, relay)) == len(flag_requests(round_trips, steps)) == 1
    assert [trip.names for trip in round_trips] == [("SET", "SET")]


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_commits_takes_the_flag_once_per_window(round_trips):
    # given a task nobody has nudged
    task_name = a_task()

    # when 20 transactions commit nudging it, one after the other
    started = time.monotonic()
    for _ in range(20):
        commit_nudging(task_name)
    elapsed = time.monotonic() - started

    # then the flag was asked for once per debounce window, not once per commit
    asked = flag_requests(round_trips, task_name)
    assert 1 <= len(asked) <= 1 + int(elapsed / DEBOUNCE_SECONDS)
    if elapsed < DEBOUNCE_SECONDS:
        assert len(asked) == 1


@pytest.mark.django_db(transaction=True)
def test_a_commit_after_the_window_asks_again(round_trips):
    # given a task this process has just nudged
    task_name = a_task()
    commit_nudging(task_name)

    # when commits keep nudging it
    def asked_twice() -> bool:
        commit_nudging(task_name)
        return len(flag_requests(round_trips, task_name)) >= 2

    eventually(asked_twice, timeout=5, what="a second flag request", interval=0.02)

    # then the second request came only once the debounce window had passed
    first, second = flag_requests(round_trips, task_name)[:2]
    assert second - first >= DEBOUNCE_SECONDS


@pytest.mark.django_db(transaction=True)
def test_nudges_asked_for_in_a_batch_outside_a_transaction_take_their_flags_together(
    round_trips,
):
    # given two tasks nobody has nudged, and no transaction (as after a unit of work)
    relay, steps = a_task(), a_task()

    # when both are nudged inside one batch
    with nudge.nudges_batched():
        nudge.nudge_on_commit(relay)
        nudge.nudge_on_commit(steps)
        # then nothing is sent before the batch ends
        assert round_trips == []

    # and both flags are asked for in one round trip as it ends
    assert len(flag_requests(round_trips, relay)) == len(flag_requests(round_trips, steps)) == 1
    assert [trip.names for trip in round_trips] == [("SET", "SET")]


@pytest.mark.django_db(transaction=True)
def test_a_batch_inside_a_transaction_sends_its_nudges_at_the_commit(round_trips):
    # given a task nobody has nudged
    task_name = a_task()

    # when it is nudged in a batch that ends inside a transaction
    with transaction.atomic():
        with nudge.nudges_batched():
            nudge.nudge_on_commit(task_name)
        # then nothing is sent before the transaction commits
        assert round_trips == []

    # and its flag is asked for once it has
    assert len(flag_requests(round_trips, task_name)) == 1
