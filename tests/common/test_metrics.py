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


def _assert_denied(response) -> None:
    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "permission_denied"
    assert b"django_http_requests" not in response.content


def test_metrics_are_closed_in_production_when_no_scraper_is_configured(client, settings):
    # given production with neither an allow-list nor a token
    settings.IS_PRODUCTION = True
    settings.METRICS_ALLOWED_NETWORKS = []
    settings.METRICS_BEARER_TOKEN = ""
    # when anyone asks, even from loopback, then it is a 403 problem
    _assert_denied(client.get("/metrics", REMOTE_ADDR="127.0.0.1"))


def test_metrics_stay_open_locally_when_no_scraper_is_configured(client, settings):
    settings.IS_PRODUCTION = False
    settings.METRICS_ALLOWED_NETWORKS = []
    settings.METRICS_BEARER_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 200


def test_metrics_allow_list_ignores_a_forwarded_for_header_nobody_vouches_for(client, settings):
    # given production, a scraper network and no trusted proxy (clients connect directly)
    settings.IS_PRODUCTION = True
    settings.METRICS_ALLOWED_NETWORKS = ["10.1.0.0/16"]
    settings.NUM_PROXIES = 0
    # when an outsider claims a scraper's address in X-Forwarded-For, then it is denied
    _assert_denied(client.get("/metrics", REMOTE_ADDR="192.0.2.7", HTTP_X_FORWARDED_FOR="10.1.2.3"))
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200


def test_metrics_allow_list_uses_the_address_our_proxy_saw(client, settings):
    # given production behind one proxy of ours (compose's nginx at 172.18.0.5)
    settings.IS_PRODUCTION = True
    settings.METRICS_ALLOWED_NETWORKS = ["10.1.0.0/16"]
    settings.NUM_PROXIES = 1
    proxy = "172.18.0.5"
    # when the scraper comes through the proxy, it is admitted
    inside = client.get("/metrics", REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="10.1.2.3")
    assert inside.status_code == 200
    # and an outsider who prepends a scraper address of their own is not
    outside = client.get(
        "/metrics", REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="10.1.2.3, 198.51.100.9"
    )
    _assert_denied(outside)
    # nor does the proxy's own network count (it is not in the allow-list)
    _assert_denied(client.get("/metrics", REMOTE_ADDR=proxy))


def test_metrics_bearer_token_admits_the_scraper_that_presents_it(client, settings):
    # given production with a scrape token and no allow-list
    settings.IS_PRODUCTION = True
    settings.METRICS_ALLOWED_NETWORKS = []
    settings.METRICS_BEARER_TOKEN = "scrape-token-0123456789abcdef"
    # when the scraper presents it, then it gets the metrics
    allowed = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-0123456789abcdef")
    assert allowed.status_code == 200
    assert b"django_http_requests" in allowed.content
    assert (
        client.get("/metrics", HTTP_AUTHORIZATION="bearer scrape-token-0123456789abcdef")
    ).status_code == 200
    # and anything else is denied
    for header in (
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer scrape-token-0123456789abcdeX",
        "Bearer scrape-token-0123456789abcde",
        "Basic scrape-token-0123456789abcdef",
        "scrape-token-0123456789abcdef",
    ):
        extra = {} if header is None else {"HTTP_AUTHORIZATION": header}
        _assert_denied(client.get("/metrics", **extra))


def test_metrics_either_the_network_or_the_token_admits_a_scrape(client, settings):
    # given both an allow-list and a token
    settings.IS_PRODUCTION = True
    settings.METRICS_ALLOWED_NETWORKS = ["10.1.0.0/16"]
    settings.METRICS_BEARER_TOKEN = "scrape-token-0123456789abcdef"
    token = {"HTTP_AUTHORIZATION": "Bearer scrape-token-0123456789abcdef"}
    # then a scraper inside the network needs no token, one outside needs it
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7", **token).status_code == 200
    _assert_denied(client.get("/metrics", REMOTE_ADDR="192.0.2.7"))
    _assert_denied(
        client.get("/metrics", REMOTE_ADDR="192.0.2.7", HTTP_AUTHORIZATION="Bearer wrong")
    )


def test_a_token_restricts_metrics_locally_too(client, settings):
    # given a local run with a token set: configuring one means "only with it"
    settings.IS_PRODUCTION = False
    settings.METRICS_ALLOWED_NETWORKS = []
    settings.METRICS_BEARER_TOKEN = "scrape-token-0123456789abcdef"
    _assert_denied(client.get("/metrics"))
