"""The relay's batch path (issue 11): one claim statement that returns the rows, one script
call that publishes the batch, one statement that marks it; the envelope as the stream
has always carried it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import outbox.relay
import outbox.sink
from outbox.models import OutboxEvent, OutboxStatus
from outbox.relay import outbox_claim, relay_once
from outbox.sink import PoisonEvent, PublishResult, sink_publish
from tests.outbox.helpers import (
    assert_delivered_exactly_once_in_order,
    assert_entry_matches_row,
    enqueue,
    new_aggregate_ids,
    status_counts,
    stream_entries,
)


@pytest.fixture
def sink_calls(monkeypatch) -> list[str]:
    """The commands the sink's Redis client sends, by name (a spy: they still run)."""
    client = outbox.sink.sink_client()
    sent: list[str] = []
    execute_command = client.execute_command

    def counting(*args, **options):
        sent.append(str(args[0]))
        return execute_command(*args, **options)

    monkeypatch.setattr(client, "execute_command", counting)
    return sent


def verbs(statements) -> list[str]:
    return [sql.split(None, 1)[0].upper() for sql in statements]


@pytest.fixture
def landing_queries(monkeypatch) -> list[str]:
    """The statements the relay's thread sends while a batch lands (a spy: they run)."""
    sent: list[str] = []
    land = outbox.relay._land

    def capturing(**kwargs):
        with CaptureQueriesContext(connection) as queries:  # (that thread's connection)
            report = land(**kwargs)
        sent.extend(q["sql"] for q in queries.captured_queries)
        return report

    monkeypatch.setattr(outbox.relay, "_land", capturing)
    return sent


@pytest.mark.django_db(transaction=True)
def test_a_batch_costs_one_claim_one_script_call_and_one_mark(sink_calls, landing_queries):
    # given 50 events of 50 aggregates, and a sink that knows the publish script already
    rows = enqueue(aggregate_ids=new_aggregate_ids(50), versions=[1])
    sink_publish([])  # nothing to send: no call at all
    assert sink_calls == []

    # when the relay runs one batch
    with CaptureQueriesContext(connection) as claiming:
        report = relay_once()

    # then it claimed, published and marked all of them
    assert (report.claimed, report.published, report.fenced) == (50, 50, 0)
    assert status_counts()[OutboxStatus.PUBLISHED] == 50
    assert_delivered_exactly_once_in_order(stream_entries(), rows)

    # with one statement each, claim and mark, and no transaction around them (autocommit:
    # one round trip each), the mark on the relay's thread's own connection
    assert verbs(q["sql"] for q in claiming.captured_queries) == ["WITH"]
    assert verbs(landing_queries) == ["UPDATE"]
    # and one script call for the whole batch (plus loading the script, the first time)
    assert [name for name in sink_calls if name != "SCRIPT LOAD"] in (
        ["EVALSHA"],
        ["EVALSHA", "EVALSHA"],  # NOSCRIPT, load, again
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("microsecond", [0, 123456])
def test_the_envelope_is_published_as_the_row_says(microsecond):
    # given an event with a nested payload, a non-ASCII text, and a time whose fraction of a
    # second is zero (isoformat then writes none) or not
    [row] = enqueue(
        aggregate_ids=new_aggregate_ids(1),
        versions=[1],
        payload={"b": [1, 2.5, None], "a": {"é": "ü", "n": "12.50"}, "ok": True},
    )
    occurred_at = datetime(2026, 1, 2, 3, 4, 5, microsecond, tzinfo=UTC)
    OutboxEvent.objects.filter(pk=row.pk).update(occurred_at=occurred_at, correlation_id="req-1")
    row.refresh_from_db()

    # when the relay publishes it
    assert relay_once().published == 1

    # then every envelope field is in the stream as before: payload as JSON text, version
    # as a decimal, occurred_at as isoformat() writes it
    [entry] = stream_entries()
    assert_entry_matches_row(entry, row)
    assert entry["occurred_at"] == occurred_at.isoformat()
    assert json.loads(entry["payload"]) == row.payload


@pytest.mark.django_db(transaction=True)
def test_a_claimed_batch_is_plain_data_with_the_attempt_counted():
    # given three events of one aggregate and one of another
    first, other = new_aggregate_ids(2)
    rows = enqueue(aggregate_ids=[first], versions=[1, 2, 3])
    rows += enqueue(aggregate_ids=[other], versions=[1])

    # when a batch is claimed
    token = uuid.uuid4()
    claimed = outbox_claim(limit=10, token=token)

    # then only the lowest version of each aggregate is in it, oldest first, as plain
    # data: the id as text, the attempt counted, our lease, the payload as JSON text
    assert [(e.aggregate_id, e.version) for e in claimed] == [(first, 1), (other, 1)]
    assert [e.id for e in claimed] == [str(rows[0].pk), str(rows[3].pk)]
    assert all(e.attempts == 1 and e.lease_token == token for e in claimed)
    assert [e.payload for e in claimed] == [{"n": 1}, {"n": 1}]
    assert [e.occurred_at for e in claimed] == [rows[0].occurred_at, rows[3].occurred_at]


@pytest.mark.django_db(transaction=True)
def test_a_batch_too_big_for_one_call_goes_in_several_with_every_answer_in_place(monkeypatch):
    # given calls that take about two events each, and a batch with a poison event inside
    monkeypatch.setattr(outbox.sink, "_CALL_CHARS", 500)
    aggregates = new_aggregate_ids(7)
    rows = enqueue(aggregate_ids=aggregates, versions=[1], payload={"text": "x" * 100})
    claimed = outbox_claim(limit=10, token=uuid.uuid4())
    poison_at = 3
    claimed[poison_at].payload_json = json.dumps({"blob": "y" * 300_000})

    # when the batch is published, and then again (a re-publish after a crash)
    first = sink_publish(claimed)
    again = sink_publish(claimed)

    # then each event has its own answer in its own place: the poison one is refused, the
    # others are in the stream once, each with its own entry; the second time, duplicates
    assert isinstance(first[poison_at], PoisonEvent)
    published = [r for i, r in enumerate(first) if i != poison_at]
    assert all(isinstance(r, PublishResult) and not r.duplicate for r in published)
    entries = stream_entries()
    assert [e["id"] for e in entries] == [e.id for i, e in enumerate(claimed) if i != poison_at]
    assert [r.entry_id for r in published] == [e["_entry_id"] for e in entries]
    assert isinstance(again[poison_at], PoisonEvent)
    assert [r.entry_id for i, r in enumerate(again) if i != poison_at] == [
        r.entry_id for r in published
    ]
    assert all(r.duplicate for i, r in enumerate(again) if i != poison_at)
    assert len(rows) == 7
