"""Prometheus endpoint.

Under gunicorn and Celery, PROMETHEUS_MULTIPROC_DIR makes every process write its samples
to files there and /metrics aggregates them (gunicorn.conf.py marks dead workers). Values
that belong to the system rather than to a process (outbox backlog and lag) come from
scrape-time collectors that apps register here; they read PostgreSQL on each scrape.

Who may scrape: see _scraper_allowed (closed by default in production; a denial is the
usual 403 problem+json).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import os

import prometheus_client
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import multiprocess

from core.client_address import client_ip

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


@functools.lru_cache(maxsize=16)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    # Settings already refused anything that does not parse.
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _address_allowed(request: HttpRequest, cidrs: list[str]) -> bool:
    # client_ip, not REMOTE_ADDR: behind our proxy every peer is the proxy itself, and a
    # client's own X-Forwarded-For entries are never trusted.
    try:
        address = ipaddress.ip_address(client_ip(request))
    except ValueError:  # "unknown"
        return False
    return any(address in network for network in _networks(tuple(cidrs)))


def _bearer_token_matches(request: HttpRequest, expected: str) -> bool:
    scheme, _, presented = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return False
    # Digests of equal length: the comparison time reveals neither content nor length.
    return hmac.compare_digest(
        hashlib.sha256(presented.strip().encode()).digest(),
        hashlib.sha256(expected.encode()).digest(),
    )


def _scraper_allowed(request: HttpRequest) -> bool:
    """A scrape from METRICS_ALLOWED_NETWORKS or with METRICS_BEARER_TOKEN; either will do.

    With neither configured, /metrics is open locally (`make run`, tests) and closed in
    production: the counters describe traffic, failures and internals to whoever asks.
    """
    networks = settings.METRICS_ALLOWED_NETWORKS
    token = settings.METRICS_BEARER_TOKEN
    if not networks and not token:
        return not settings.IS_PRODUCTION
    if token and _bearer_token_matches(request, token):
        return True
    return bool(networks) and _address_allowed(request, networks)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _scraper_allowed(request):
        raise PermissionDenied("metrics are served to the configured scrapers only")
    return HttpResponse(
        prometheus_client.generate_latest(_registry()),
        content_type=prometheus_client.CONTENT_TYPE_LATEST,
    )
