"""/metrics cannot grow with what a client chooses (issue 9 item 7).

Before the fix, django-prometheus labelled its latency histogram with the raw request
method: every made-up method added a histogram (~15 series) for the life of the process.

The test sends the same *shape* of traffic twice: a warm-up pass over a fixed matrix
(route x method class x header class), then ~1,000 more requests over the same matrix in
which every value a client is free to choose is fresh and random: the unknown method's name,
unknown paths, Host port, Content-Type and its charset, Accept, X-Request-ID,
X-Forwarded-For, X-API-Key, User-Agent, cookies and query strings. Each cell of the matrix
produces the same response class whatever the random values are, so every series that
legitimately exists (a status code a route really returns, under a view name and one of ten
method labels) already exists after the warm-up. The set of series (metric name + label set)
must then be exactly the same after the random traffic: no byte threshold, no tolerance.
The random values also carry a marker that must not appear anywhere in /metrics.

The Django test client is the faithful choice: django-prometheus runs in-process either way,
and unlike gunicorn the test client lets *any* method string through to the middleware.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from core.prometheus_middleware import KNOWN_METHODS, OTHER_METHOD
from tests.factories import make_api_client, make_product

pytestmark = pytest.mark.django_db

MARKER = "rndq7"  # in every random value; never in a metric name, label or help text
KNOWN = sorted(KNOWN_METHODS)


def _token(n: int = 6) -> str:
    return MARKER + secrets.token_hex(n)


def _method_token() -> str:
    # Method names are tokens: letters (and a few symbols) only; upper case like a real one.
    return (
        MARKER + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(8))
    ).upper()


def _mixed_case(method: str) -> str:
    while True:
        candidate = "".join(secrets.choice((c.lower(), c)) for c in method)
        if candidate != method:
            return candidate


Series = frozenset[tuple[str, tuple[tuple[str, str], ...]]]


def _scrape(client: Client) -> tuple[str, Series]:
    response = client.get("/metrics", HTTP_HOST="testserver")
    assert response.status_code == 200, response.content[:300]
    text = response.content.decode()
    series = frozenset(
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )
    return text, series


def _routes(product_id: str) -> list[tuple[str, bool]]:
    """(path, send a valid API key) - the fixed part of the matrix; `{r}` is a fresh token."""
    return [
        ("/api/v1/products/", False),
        ("/api/v1/products/?search={r}&k{r}={r}", False),
        (f"/api/v1/products/{product_id}/", False),
        ("/api/v1/products/{uuid}/", False),
        ("/api/v1/orders/", False),
        ("/api/v1/orders/", True),
        ("/api/v1/orders/{uuid}/?k{r}={r}", True),
        ("/api/v1/orders/{uuid}/cancel/", True),
        ("/api/v1/payments/webhook/", False),
        ("/healthz?{r}={r}", False),
        ("/readyz", False),
        ("/{r}/{r}", False),
        ("/api/v1/{r}/", False),
        ("/api/v2/{r}/{r}/?{r}={r}", False),
        ("/admin/", False),
        ("/admin/login/?next=/{r}/", False),
        ("/admin/{r}/", False),
        ("/admin/{r}", False),
        ("/static/{r}.css", False),
    ]


def _fill(template: str) -> str:
    path = template.replace("{uuid}", str(uuid.uuid4()))
    while "{r}" in path:
        path = path.replace("{r}", _token(), 1)
    return path


def _headers(*, api_key: str | None, valid_host: bool) -> dict[str, str]:
    """Client-chosen headers; every value random, none able to change the response class."""
    host = f"testserver:{secrets.randbelow(60000) + 1024}" if valid_host else f"{_token()}.example"
    headers = {
        "HTTP_HOST": host,
        "CONTENT_TYPE": f"application/json; charset={_token()}; {_token()}={_token()}",
        # A made-up type first, then a fallback the API can honour: still 2xx/4xx as before.
        "HTTP_ACCEPT": (
            f"application/{_token()};q=0.9, text/{_token()};charset={_token()}, */*;q=0.1"
        ),
        "HTTP_ACCEPT_CHARSET": _token(),
        "HTTP_ACCEPT_LANGUAGE": _token(),
        "HTTP_X_REQUEST_ID": _token(16),
        "HTTP_X_FORWARDED_FOR": f"10.{secrets.randbelow(255)}.{secrets.randbelow(255)}.1",
        "HTTP_X_FORWARDED_PROTO": _token(),
        "HTTP_X_FORWARDED_HOST": _token(),
        "HTTP_USER_AGENT": _token(20),
        "HTTP_REFERER": f"https://{_token()}.example/{_token()}",
        "HTTP_COOKIE": f"{_token()}={_token()}",
        "HTTP_X_REQUESTED_WITH": _token(),
        "HTTP_X_API_KEY": api_key or _token(16),
    }
    return headers


def _traffic(product_id: str, api_key: str, repeat: int) -> Iterator[tuple[str, str, dict, bytes]]:
    """The matrix, `repeat` times, each request with fresh random values."""
    for _ in range(repeat):
        for template, with_key in _routes(product_id):
            for kind in [*KNOWN, "unknown", "mixed-case"]:
                if kind == "unknown":
                    method = _method_token()
                elif kind == "mixed-case":
                    method = _mixed_case("GET")  # methods are case-sensitive: "other"
                else:
                    method = kind
                for valid_host in (True, False):
                    headers = _headers(api_key=api_key if with_key else None, valid_host=valid_host)
                    body = f'{{"{_token()}": "{_token()}"'.encode()  # never valid JSON
                    yield method, _fill(template), headers, body


def _send(client: Client, method: str, path: str, headers: dict, body: bytes) -> int:
    content_type = headers.pop("CONTENT_TYPE")
    response = client.generic(method, path, data=body, content_type=content_type, **headers)
    return response.status_code


@pytest.fixture
def unlimited(settings):
    """No rate limit may flip a response class half-way through (that would be a real,
    bounded new series, but not the same matrix any more)."""
    settings.API_RATE_LIMIT = "1000000/60s"
    settings.ORDER_RATE_LIMIT = "1000000/60s"
    settings.API_KEY_FAILURE_RATE_LIMIT = "1000000/60s"
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.0/8"]


def test_random_methods_paths_headers_and_queries_add_no_series(unlimited):
    # given a product, an API key, and one warm-up pass over the request matrix
    product_id = str(make_product(stock=5).pk)
    _row, api_key = make_api_client()
    client = Client(raise_request_exception=False)
    warm_statuses = [_send(client, *request) for request in _traffic(product_id, api_key, 1)]
    _scrape(client)  # a scrape is a request too: its own series appear after the first
    warm_text, warm_series = _scrape(client)

    # when ~1,000 requests of the same shape follow, every client-chosen value fresh
    statuses = [_send(client, *request) for request in _traffic(product_id, api_key, 3)]
    text, series = _scrape(client)

    # then not one new series (label set), and no random value anywhere in /metrics
    assert len(statuses) >= 1000
    assert not [s for s in statuses + warm_statuses if s >= 500], "a request failed with 5xx"
    new = sorted(series - warm_series)
    assert not new, f"{len(new)} new series, e.g. {new[:5]}"
    assert MARKER not in text
    # ... and the unknown methods were counted, under the one shared label
    assert (
        "django_http_requests_total_by_method_total",
        (("method", OTHER_METHOD),),
    ) in series
    print(  # the figures for the closing note (pytest -s)
        json.dumps(
            {
                "requests": len(statuses) + len(warm_statuses),
                "series_after_warmup": len(warm_series),
                "series_after_random_traffic": len(series),
                "bytes_after_warmup": len(warm_text),
                "bytes_after_random_traffic": len(text),
            }
        )
    )


def test_every_label_value_comes_from_a_bounded_set(unlimited):
    # given traffic with random methods and paths
    product_id = str(make_product(stock=5).pk)
    _row, api_key = make_api_client()
    client = Client(raise_request_exception=False)
    for request in _traffic(product_id, api_key, 1):
        _send(client, *request)

    # when /metrics is read
    _text, series = _scrape(client)

    # then each `method` label is a registered method or "other", each `status` a 3-digit
    # code, each `transport` http/https, and each `view` a URL pattern name or "<unnamed view>"
    labels: dict[str, set[str]] = {}
    for _name, label_set in series:
        for key, value in label_set:
            labels.setdefault(key, set()).add(value)
    assert labels["method"] <= KNOWN_METHODS | {OTHER_METHOD}, labels["method"]
    assert all(v.isdigit() and len(v) == 3 for v in labels["status"]), labels["status"]
    assert labels["transport"] <= {"http", "https"}
    assert not any(MARKER in value for values in labels.values() for value in values)


def test_garbage_content_length_is_not_a_5xx(unlimited):
    # given a request whose Content-Length header is not a number (gunicorn refuses these;
    # the metrics middleware must not depend on that)
    client = Client(raise_request_exception=False)

    # when it reaches the application
    response = client.get("/healthz", CONTENT_LENGTH="abc")

    # then it is served as if it had no body
    assert response.status_code == 200, response.content
