"""/api/v1/ and the probes skip the admin's middlewares; the admin keeps every one of them.

core/api_middleware.py sends API paths past sessions, CSRF, auth, messages, X-Frame-Options,
history and axes. The admin must not notice: its cookies, CSRF refusal and framing header
are asserted here, as is the API's answer to a client that sends no CSRF token at all.
"""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import Client

from core.api_middleware import ApiPathsMiddleware, is_api_path
from tests.factories import make_api_client, make_product

pytestmark = pytest.mark.django_db


def test_api_and_probe_paths_are_recognised_and_nothing_else():
    assert is_api_path("/api/v1/orders/")
    assert is_api_path("/healthz") and is_api_path("/readyz") and is_api_path("/metrics")
    assert not is_api_path("/admin/login/")
    assert not is_api_path("/api/docs/")  # an HTML page: it keeps X-Frame-Options
    assert not is_api_path("/healthz/")
    assert not is_api_path("/static/admin/css/base.css")


def test_the_admin_keeps_its_cookie_framing_header_and_csrf_refusal():
    # given a browser that sends no CSRF token
    browser = Client(enforce_csrf_checks=True)
    # when it opens the login page and posts to it without the token
    page = browser.get("/admin/login/")
    refused = Client(enforce_csrf_checks=True).post(
        "/admin/login/", {"username": "x", "password": "y"}
    )
    # then the page sets the CSRF cookie and may not be framed, and the post is refused
    assert page.status_code == 200
    assert "csrftoken" in page.cookies
    assert page["X-Frame-Options"] == "DENY"
    assert "Cookie" in page["Vary"]
    assert refused.status_code == 403


def test_an_api_order_needs_no_csrf_token_and_gets_no_cookie():
    # given a client with a key that sends no CSRF token (CSRF checks enforced)
    _, key = make_api_client()
    product = make_product(stock=5)
    client = Client(enforce_csrf_checks=True, HTTP_X_API_KEY=key)
    # when it places an order
    response = client.post(
        "/api/v1/orders/",
        json.dumps(
            {"email": "a@example.com", "items": [{"product_id": str(product.pk), "quantity": 1}]}
        ),
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="api-middleware-1",
    )
    # then it is created, with no cookie, no Vary: Cookie and no admin-only framing header
    assert response.status_code == 201, response.content
    assert not response.cookies
    assert "Cookie" not in response.get("Vary", "")
    assert "X-Frame-Options" not in response
    # and the headers the API does send are still there
    assert response["X-Request-ID"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["RateLimit-Limit"]


def test_the_webhook_takes_a_post_without_csrf_token():
    # given a provider that sends no CSRF token (CSRF checks enforced), and no signature
    provider = Client(enforce_csrf_checks=True)
    # when it posts to the webhook
    response = provider.post("/api/v1/payments/webhook/", "{}", content_type="application/json")
    # then the webhook itself answers (the missing signature), not CSRF's 403
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"


def test_the_api_keeps_common_middleware():
    # given a list URL without its trailing slash
    response = Client().get("/api/v1/products")
    # then CommonMiddleware still redirects it as before
    assert response.status_code == 301
    assert response["Location"].endswith("/api/v1/products/")


def test_without_its_end_marker_the_middleware_refuses_to_start():
    with pytest.raises(ImproperlyConfigured):
        ApiPathsMiddleware(lambda request: HttpResponse())
