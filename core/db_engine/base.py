"""Django's own PostgreSQL DatabaseWrapper plus django-prometheus' metrics, at no per-cursor cost.

Only two things are added, both once per connection object or per connection opened:
the StatementTally execute wrapper (core/db_metrics.py), and the counts of connections
opened and failed (django_db_new_connections_total / django_db_new_connection_errors_total,
which have no signal of their own: a failed connect never reaches connection_created).
Cursors are Django's and psycopg's unchanged.

And one thing is changed: the CONN_HEALTH_CHECKS probe (`is_usable`, run before a reused
connection's first query of each request) costs no round trip. Django's sends `SELECT 1`:
one of the few round trips an order creation is down to. A connection whose server went
away has something to read while it sits idle (the server's FATAL "terminating
connection", or end of file when its socket closed); a healthy idle connection has nothing.
So "idle, and nothing to read" is what this checks, with a zero-timeout poll of the socket.
A false alarm only costs a reconnect.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base

# django-prometheus ships no type information.
from django_prometheus.db import (  # type: ignore[import-untyped]
    connection_errors_total,
    connections_total,
)
from psycopg.pq import TransactionStatus

from core.db_metrics import StatementTally


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.execute_wrappers.append(StatementTally(alias=self.alias, vendor=self.vendor))
        self._connections_opened = connections_total.labels(self.alias, self.vendor)
        self._connections_failed = connection_errors_total.labels(self.alias, self.vendor)

    def get_new_connection(self, conn_params):
        self._connections_opened.inc()
        try:
            return super().get_new_connection(conn_params)
        except Exception:
            self._connections_failed.inc()
            raise

    def is_usable(self) -> bool:
        if self.connection is None or self.connection.closed:
            return False
        if self.connection.info.transaction_status != TransactionStatus.IDLE:
            return False
        try:
            poller = select.poll()
            poller.register(self.connection.fileno(), select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False
