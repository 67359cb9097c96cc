"""django-prometheus' database metrics, counted per request instead of per statement.

The series are django-prometheus' own (same metric objects, names, help texts and labels):
django_db_new_connections_total, django_db_new_connection_errors_total,
django_db_execute_total, django_db_execute_many_total, django_db_errors_total{type} and
django_db_query_duration_seconds. Its database engine counted them with a cursor class built
for every cursor and three Prometheus writes per statement (under PROMETHEUS_MULTIPROC_DIR,
three mmap writes, each under a lock): a third of the metrics cost of an order.

Here the plain PostgreSQL engine (core.db_engine adds only connection counting) gives each
connection object an execute wrapper. It adds each
statement to a tally in plain Python (the connection object is per thread, so is its tally),
and the tally is written to the pre-bound Prometheus children once, when the request (or
Celery task) ends, and in long loops at the first statement FLUSH_EVERY_SECONDS after the
oldest pending one (and at exit).
The histogram keeps its buckets exactly: each duration is binned as Histogram.observe bins it.

Differences from the engine: statements are counted where Django sends them (every ORM
query and cursor.execute); the engine also saw psycopg cursors Django opens for itself
(the CONN_HEALTH_CHECKS `SELECT 1`). Statement errors are labelled with the psycopg class
(`UniqueViolation`), as before: Django's wrapper re-raises them as IntegrityError & co.
from that cause.
"""

from __future__ import annotations

import atexit
import bisect
import time
from collections.abc import Sized
from typing import Any

from celery.signals import task_postrun
from django.core.signals import request_finished
from django.db import connections
from django.db.utils import Error as DjangoDatabaseError

# django-prometheus ships no type information.
from django_prometheus.db import (  # type: ignore[import-untyped]
    errors_total,
    execute_many_total,
    execute_total,
    query_duration_seconds,
)

# A tally of a thread with no requests (a Celery task, a command) waits at most this long.
FLUSH_EVERY_SECONDS = 1.0


def error_type_label(exc: BaseException) -> str:
    """The driver's exception class, which django-prometheus' cursor saw before Django's
    error wrapper turned it into IntegrityError, OperationalError, ..."""
    if isinstance(exc, DjangoDatabaseError) and exc.__cause__ is not None:
        return type(exc.__cause__).__name__
    return type(exc).__name__


class StatementTally:
    """The execute wrapper of one connection: counts in Python, writes to Prometheus in flush().

    The Prometheus children are resolved once here, not with .labels() per statement.
    """

    def __init__(self, *, alias: str, vendor: str) -> None:
        self.alias, self.vendor = alias, vendor
        self._executes = execute_total.labels(alias, vendor)
        self._execute_manys = execute_many_total.labels(alias, vendor)
        self._duration = query_duration_seconds.labels(alias, vendor)
        self._upper_bounds: list[float] = list(self._duration._upper_bounds)
        self._reset()

    def _reset(self) -> None:
        self.statements = 0
        self.bulk_statements = 0
        self.bucket_counts = [0] * len(self._upper_bounds)
        self.duration_sum = 0.0
        self.pending_since: float | None = None

    def __call__(self, execute, sql, params, many, context):
        if many and not isinstance(params, Sized):
            params = list(params)  # counted below and sent as before
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        except Exception as exc:
            # Rare: written at once, with the label set django-prometheus gives it.
            errors_total.labels(self.alias, self.vendor, error_type_label(exc)).inc()
            raise
        finally:
            self._record(started, time.perf_counter(), len(params) if many else 0, many)

    def _record(self, started: float, finished: float, bulk: int, many: bool) -> None:
        duration = finished - started
        if many:
            self.statements += bulk
            self.bulk_statements += bulk
        else:
            self.statements += 1
        # Histogram.observe puts a value in the first bucket whose bound is >= it.
        self.bucket_counts[bisect.bisect_left(self._upper_bounds, duration)] += 1
        self.duration_sum += duration
        if self.pending_since is None:
            self.pending_since = finished
        elif finished - self.pending_since >= FLUSH_EVERY_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.pending_since is None:
            return
        if self.statements:
            self._executes.inc(self.statements)
        if self.bulk_statements:
            self._execute_manys.inc(self.bulk_statements)
        # A histogram child has no public "add n observations to bucket i"; its values are
        # the ones observe() increments (tests/common/test_db_metrics.py pins the result).
        for index, count in enumerate(self.bucket_counts):
            if count:
                self._duration._buckets[index].inc(count)
        self._duration._sum.inc(self.duration_sum)
        self._reset()


def tally_of(connection: Any) -> StatementTally | None:
    for wrapper in connection.execute_wrappers:
        if isinstance(wrapper, StatementTally):
            return wrapper
    return None


def flush_statement_tallies(**kwargs) -> None:
    """request_finished, task_postrun and exit: write this thread's tallies to Prometheus."""
    for connection in connections.all(initialized_only=True):
        tally = tally_of(connection)
        if tally is not None:
            tally.flush()


request_finished.connect(flush_statement_tallies, dispatch_uid="core.db_metrics.flush")
task_postrun.connect(flush_statement_tallies, dispatch_uid="core.db_metrics.flush")
atexit.register(flush_statement_tallies)
