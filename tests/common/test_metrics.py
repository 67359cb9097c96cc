"""/metrics serves Prometheus text with django-prometheus's request counters (SPEC §7)."""

from __future__ import annotations

import re

import pytest
from django.test import Client


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


def _sample(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_metrics_is_prometheus_text_with_request_counters(client):
    # given the counter before a request
    before = client.get("/metrics").content.decode()
    count_before = _sample(before, "django_http_requests_total_by_method_total", 'method="GET"')
    # when requests are served
    client.get("/healthz")
    response = client.get("/metrics")
    # then
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert "# TYPE django_http_requests_total_by_method_total counter" in text
    assert "django_http_requests_latency_seconds_by_view_method" in text
    count_after = _sample(text, "django_http_requests_total_by_method_total", 'method="GET"')
    assert count_after >= count_before + 2  # /healthz and the first /metrics


def test_metrics_counts_responses_by_status(client):
    client.get("/healthz")
    text = client.get("/metrics").content.decode()
    assert re.search(r'^django_http_responses_total_by_status_total\{status="200"\} \d', text, re.M)


def test_metrics_refuses_writes(client):
    assert client.post("/metrics").status_code == 405


def test_metrics_can_be_restricted_to_the_scrapers_networks(client, settings):
    # given /metrics restricted to a scraper network
    settings.METRICS_ALLOWED_NETWORKS = ["10.1.0.0/16"]
    # when the scraper asks, it gets the metrics; anyone else gets a 403 problem
    allowed = client.get("/metrics", REMOTE_ADDR="10.1.2.3")
    refused = client.get("/metrics", REMOTE_ADDR="192.0.2.7")
    assert allowed.status_code == 200
    assert refused.status_code == 403
    assert refused["Content-Type"] == "application/problem+json"
