"""Prometheus endpoint.

Under gunicorn and Celery, PROMETHEUS_MULTIPROC_DIR makes every process write its samples
to files there and /metrics aggregates them (gunicorn.conf.py marks dead workers). Values
that belong to the system rather than to a process (outbox backlog and lag) come from
scrape-time collectors that apps register here; they read PostgreSQL on each scrape.
"""

from __future__ import annotations

import os

import prometheus_client
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import multiprocess

_scrape_time_collectors: list = []


def register_scrape_time_collector(collector) -> None:
    if collector not in _scrape_time_collectors:
        _scrape_time_collectors.append(collector)


def _registry() -> prometheus_client.CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = prometheus_client.CollectorRegistry()
        registry.register(_DefaultRegistryView())
    for collector in _scrape_time_collectors:
        registry.register(collector)
    return registry


class _DefaultRegistryView:
    """Everything the process-global registry holds, without re-registering it."""

    def collect(self):
        return prometheus_client.REGISTRY.collect()


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        prometheus_client.generate_latest(_registry()),
        content_type=prometheus_client.CONTENT_TYPE_LATEST,
    )
