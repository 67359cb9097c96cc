"""Prometheus metrics of the outbox relay. Counters are written by Celery workers and
aggregated by /metrics through PROMETHEUS_MULTIPROC_DIR; pending count and lag are read
from PostgreSQL at scrape time (outbox/collectors.py)."""

from prometheus_client import Counter, Gauge, Histogram

PUBLISHED = Counter("outbox_published_total", "Events published to the stream")
RETRIES = Counter("outbox_publish_retries_total", "Failed publish attempts scheduled for retry")
DEAD_LETTERS = Counter("outbox_dead_letters_total", "Events moved to dead letters")
FENCED = Counter(
    "outbox_fenced_acks_total", "Marks refused because another worker re-claimed the row"
)
BREAKER_OPEN = Gauge(
    "outbox_relay_breaker_open",
    "1 while a relay process has paused because the sink is unreachable",
    multiprocess_mode="max",
)
DELIVERY_LAG = Histogram(
    "outbox_delivery_lag_seconds",
    "Seconds from the event's commit to its stream entry",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
