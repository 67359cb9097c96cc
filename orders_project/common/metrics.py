"""Prometheus endpoint.

Under gunicorn and Celery, PROMETHEUS_MULTIPROC_DIR makes every process write its samples
to files there and /metrics aggregates them (gunicorn.conf.py marks dead workers). Values
that belong to the system rather than to a process (outbox backlog and lag) come from
scrape-time collectors that apps register here; they read PostgreSQL on each scrape.
"""

from __future__ import annotations

import ipaddress
import os

import prometheus_client
from django.conf import settings
from django.core.exceptions import PermissionDenied
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


def _scraper_allowed(request: HttpRequest) -> bool:
    """METRICS_ALLOWED_NETWORKS (CIDRs) restricts /metrics to the scrapers; empty = anyone."""
    networks = settings.METRICS_ALLOWED_NETWORKS
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in networks)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _scraper_allowed(request):
        raise PermissionDenied("metrics are served to the configured scrapers only")
    return HttpResponse(
        prometheus_client.generate_latest(_registry()),
        content_type=prometheus_client.CONTENT_TYPE_LATEST,
    )
