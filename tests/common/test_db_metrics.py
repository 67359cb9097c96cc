"""django-prometheus' database series, tallied per connection and written once per request.

core/db_metrics.py keeps the series of django-prometheus' engine (names, labels, values) but
writes them to Prometheus when a request ends instead of three times per statement.
"""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection
from django.db.utils import load_backend
from django.test import Client
from django_prometheus.db import query_duration_seconds
from prometheus_client import REGISTRY, Histogram

from core import db_metrics
from core.db_metrics import StatementTally, flush_statement_tallies, tally_of

LABELS = {"alias": "default", "vendor": "postgresql"}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {**LABELS, **labels}) or 0.0


def executed() -> float:
    return sample("django_db_execute_total")


def run_statements(count: int) -> None:
    with connection.cursor() as cursor:
        for _ in range(count):
            cursor.execute("SELECT 1")


@pytest.fixture
def flushed(db):
    flush_statement_tallies()  # start every test with nothing pending


def test_statements_reach_prometheus_when_the_request_ends_not_one_by_one(flushed):
    # given the counters before
    before, durations_before = executed(), sample("django_db_query_duration_seconds_count")
    # when five statements run outside a request
    run_statements(5)
    # then nothing was written yet
    assert executed() == before
    # when the flush at the end of a request runs
    flush_statement_tallies()
    # then all five are counted and timed
    assert executed() == before + 5
    assert sample("django_db_query_duration_seconds_count") == durations_before + 5


def test_the_end_of_a_request_writes_what_is_pending(flushed):
    # given three statements pending
    before = executed()
    run_statements(3)
    # when a request is served (it sends statements of its own)
    response = Client().get("/readyz")
    # then they and the request's own statements are written, and nothing is left pending
    assert response.status_code == 200
    assert executed() >= before + 4
    assert tally_of(connection).pending_since is None


def test_executemany_counts_each_parameter_set(flushed):
    # given the counters before
    before, bulk_before = executed(), sample("django_db_execute_many_total")
    # when one executemany sends three parameter sets (a generator, as Django allows)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE db_metrics_probe (n int)")
        cursor.executemany("INSERT INTO db_metrics_probe VALUES (%s)", ((n,) for n in range(3)))
        cursor.execute("SELECT count(*) FROM db_metrics_probe")
        inserted = cursor.fetchone()[0]
    flush_statement_tallies()
    # then all three rows went in, and the counters count three bulk statements
    assert inserted == 3
    assert sample("django_db_execute_many_total") == bulk_before + 3
    assert executed() == before + 2 + 3


def test_a_failed_statement_is_counted_at_once_under_the_driver_class(flushed):
    # given the error counter before
    labels = {"type": "UndefinedTable"}
    before = sample("django_db_errors_total", **labels)
    # when a statement fails
    with pytest.raises(DatabaseError), connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table_db_metrics")
    # then it is counted with psycopg's class, as django-prometheus' cursor counted it
    assert sample("django_db_errors_total", **labels) == before + 1


def test_buckets_are_those_histogram_observe_gives(flushed):
    # given durations on and around every bucket bound of the histogram
    bounds = list(query_duration_seconds.labels(**LABELS)._upper_bounds)
    durations = [0.0] + [b for b in bounds[:-1]] + [b * 1.001 for b in bounds[:-1]] + [1e6]
    reference = Histogram("db_metrics_reference", "ref", buckets=bounds[:-1], registry=None)
    before = [sample("django_db_query_duration_seconds_bucket", le=_le(b)) for b in bounds]
    tally = StatementTally(alias="default", vendor="postgresql")
    # when the tally records them and flushes
    for duration in durations:
        reference.observe(duration)
        tally._record(0.0, duration, 0, many=False)
    tally.flush()
    # then every cumulative bucket grew as the reference histogram's did
    expected = {s.labels["le"]: s.value for s in reference.collect()[0].samples if "le" in s.labels}
    for bound, value_before in zip(bounds, before, strict=True):
        grown = sample("django_db_query_duration_seconds_bucket", le=_le(bound)) - value_before
        assert grown == expected[_le(bound)]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def test_a_thread_without_requests_flushes_after_the_interval(flushed, monkeypatch):
    # given no waiting at all between flushes (a Celery task has no request_finished)
    monkeypatch.setattr(db_metrics, "FLUSH_EVERY_SECONDS", 0.0)
    before = executed()
    # when two statements run
    run_statements(2)
    # then the second one wrote both
    assert executed() == before + 2


def test_opened_and_failed_connections_are_counted(flushed):
    # given the counters before
    opened = sample("django_db_new_connections_total")
    failed = sample("django_db_new_connection_errors_total")
    # when a connection opens, and another one cannot
    backend = load_backend(connection.settings_dict["ENGINE"])
    reachable = backend.DatabaseWrapper(connection.settings_dict)
    reachable.ensure_connection()
    reachable.close()
    unreachable = backend.DatabaseWrapper(
        {**connection.settings_dict, "PORT": "1", "OPTIONS": {"connect_timeout": 1}}
    )
    with pytest.raises(DatabaseError):
        unreachable.ensure_connection()
    # then both attempts are counted, and the failure (django-prometheus counted them so)
    assert sample("django_db_new_connections_total") == opened + 2
    assert sample("django_db_new_connection_errors_total") == failed + 1
