"""Scrape-time gauges read from PostgreSQL: correct whatever number of processes run."""

from __future__ import annotations

import logging

from django.db import connection
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)


class OutboxCollector:
    def collect(self):
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    """
                    SELECT status, count(*),
                           COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)
                    FROM outbox_outboxevent
                    WHERE status IN ('pending', 'dead')
                    GROUP BY status
                    """
                )
                rows = {status: (count, age) for status, count, age in cursor.fetchall()}
        except Exception:  # a scrape must not fail because the database is down
            logger.warning("outbox metrics unavailable", exc_info=True)
            return
        pending = GaugeMetricFamily("outbox_pending_events", "Events waiting to be published")
        pending.add_metric([], rows.get("pending", (0, 0))[0])
        yield pending
        lag = GaugeMetricFamily(
            "outbox_oldest_pending_age_seconds", "Age of the oldest pending event (relay lag)"
        )
        lag.add_metric([], float(rows.get("pending", (0, 0))[1]))
        yield lag
        dead = GaugeMetricFamily("outbox_dead_events", "Events in the dead-letter state")
        dead.add_metric([], rows.get("dead", (0, 0))[0])
        yield dead
