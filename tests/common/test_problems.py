"""Every error the service returns is application/problem+json with a stable code (SPEC §3).

Probe views (tests/common/urls_for_tests.py) provoke the errors no real endpoint has yet.
"""

from __future__ import annotations

import uuid

import pytest
from django.test import Client, override_settings

from tests.common.helpers import assert_problem

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.common.urls_for_tests")]


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


# --- 400 -------------------------------------------------------------------------------


def test_malformed_json_is_400_validation_error(client):
    # given a body that is not JSON
    # when it is posted as JSON
    response = client.post("/probe/echo/", data='{"email": ', content_type="application/json")
    # then
    body = assert_problem(response, status=400, code="validation_error")
    assert body["errors"][0]["field"] == ""


def test_validation_errors_are_flattened_to_field_paths(client):
    # given a body whose nested fields are wrong in three kinds of places
    body = {
        "validate": {
            "email": "not-an-email",
            "items": [{"product_id": str(uuid.uuid4()), "quantity": 1}, {"quantity": 0}],
            "tags": [1, "x"],
        }
    }
    # when
    response = client.post("/probe/echo/", data=body, content_type="application/json")
    # then each error names its field path, the way SPEC writes "items[0].quantity"
    problem = assert_problem(response, status=400, code="validation_error")
    fields = {error["field"] for error in problem["errors"]}
    assert fields == {"email", "items[1].product_id", "items[1].quantity", "tags[1]"}
    assert all(error["message"] for error in problem["errors"])


def test_a_non_object_body_fails_validation_not_the_server(client):
    # given a JSON body that is a list where an object is expected
    body = {"validate": ["not", "an", "object"]}
    # when
    response = client.post("/probe/echo/", data=body, content_type="application/json")
    # then
    problem = assert_problem(response, status=400, code="validation_error")
    assert problem["errors"][0]["field"] == ""


def test_disallowed_host_outside_drf_is_400_problem(client):
    # when Django itself refuses the request (SuspiciousOperation before any view)
    response = client.get("/healthz", HTTP_HOST="evil.example")
    # then
    assert_problem(response, status=400, code="bad_request")


# --- 401 / 403 -------------------------------------------------------------------------


def test_missing_key_is_401_not_authenticated_with_challenge(client):
    response = client.get("/probe/protected/")
    assert_problem(response, status=401, code="not_authenticated")
    assert response["WWW-Authenticate"] == 'ApiKey header="X-API-Key"'


def test_unknown_key_is_401_authentication_failed(client):
    response = client.get("/probe/protected/", HTTP_X_API_KEY="ok_nope_nope")
    assert_problem(response, status=401, code="authentication_failed")
    assert response["WWW-Authenticate"] == 'ApiKey header="X-API-Key"'


def test_drf_permission_denied_is_403(client):
    response = client.get("/probe/forbidden/")
    problem = assert_problem(response, status=403, code="permission_denied")
    assert problem["detail"] == "Probe says no."


def test_django_permission_denied_outside_drf_is_403(client):
    response = client.get("/probe/forbidden-plain/")
    assert_problem(response, status=403, code="permission_denied")


# --- 404 -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/api/v1/products/not-a-uuid/"])
def test_unknown_paths_are_404_problem(client, path):
    assert_problem(client.get(path), status=404, code="not_found")


def test_unknown_product_is_404_problem(client):
    response = client.get(f"/api/v1/products/{uuid.uuid4()}/")
    assert_problem(response, status=404, code="not_found")


@override_settings(DEBUG=True)
def test_unknown_path_is_404_problem_even_with_debug(client):
    # Django's DEBUG 404 page is HTML listing every URL pattern; it must not reach clients
    assert_problem(client.get("/nope"), status=404, code="not_found")


# --- 405 -------------------------------------------------------------------------------


def test_post_to_product_list_is_405_with_allow(client):
    response = client.post("/api/v1/products/", data={}, content_type="application/json")
    assert_problem(response, status=405, code="method_not_allowed")
    assert "GET" in response["Allow"]
    assert "POST" not in response["Allow"]


def test_post_to_healthz_is_405_with_allow(client):
    response = client.post("/healthz")
    assert_problem(response, status=405, code="method_not_allowed")
    assert [m.strip() for m in response["Allow"].split(",")] == ["GET", "HEAD"]


# --- 413 -------------------------------------------------------------------------------


@override_settings(MAX_REQUEST_BODY_BYTES=64)
def test_declared_body_over_the_limit_is_413_before_it_is_read(client):
    # given a JSON body of 65 bytes against a 64-byte limit
    body = '{"x": "' + "a" * 56 + '"}'
    assert len(body) == 65
    # when
    response = client.post("/probe/echo/", data=body, content_type="application/json")
    # then
    problem = assert_problem(response, status=413, code="payload_too_large")
    assert "64 bytes" in problem["detail"]


@override_settings(MAX_REQUEST_BODY_BYTES=64)
def test_body_at_the_limit_is_accepted(client):
    body = '{"x": "' + "a" * 55 + '"}'
    assert len(body) == 64
    response = client.post("/probe/echo/", data=body, content_type="application/json")
    assert response.status_code == 200


@override_settings(MAX_REQUEST_BODY_BYTES=10_000, DATA_UPLOAD_MAX_MEMORY_SIZE=64)
def test_body_over_data_upload_max_memory_size_is_413(client):
    # given a limit on request.body lower than the middleware's limit
    # when a view reads a bigger body (Django raises RequestDataTooBig)
    response = client.post("/probe/body/", data="a" * 100, content_type="text/plain")
    # then it is 413, not the generic 400 Django gives every SuspiciousOperation
    assert_problem(response, status=413, code="payload_too_large")


@override_settings(MAX_REQUEST_BODY_BYTES=10_000, DATA_UPLOAD_MAX_MEMORY_SIZE=64)
def test_body_too_big_for_a_middleware_is_413_too():
    # given CSRF checks on, so CsrfViewMiddleware reads the form body before any view runs
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    client.cookies["csrftoken"] = "a" * 32
    # when the form body is over DATA_UPLOAD_MAX_MEMORY_SIZE
    response = client.post("/healthz", data={"csrfmiddlewaretoken": "a" * 32, "x": "y" * 100})
    # then Django's handler400 path answers 413 as well
    assert_problem(response, status=413, code="payload_too_large")


@override_settings(MAX_REQUEST_BODY_BYTES=64)
def test_body_without_content_length_is_never_read(client):
    # given a big body sent without a Content-Length (e.g. chunked through gunicorn)
    # when it reaches a JSON view
    response = client.post(
        "/probe/echo/", data="a" * 1000, content_type="application/json", CONTENT_LENGTH=""
    )
    # then the WSGI layer reads no undeclared bytes: the view sees an empty body
    assert response.status_code == 200
    assert response.json() == {"received": {}}


# --- 415 -------------------------------------------------------------------------------


def test_text_plain_body_is_415(client):
    response = client.post("/probe/echo/", data="hello", content_type="text/plain")
    problem = assert_problem(response, status=415, code="unsupported_media_type")
    assert "text/plain" in problem["detail"]


# --- 429 -------------------------------------------------------------------------------


def test_throttled_is_429_with_retry_after(client):
    response = client.get("/probe/throttled/")
    assert_problem(response, status=429, code="rate_limited")
    assert response["Retry-After"] == "3"


def test_a_real_drf_throttle_counts_in_redis_and_answers_429(client):
    # given a throttle of one request per minute, keyed uniquely for this test
    key = uuid.uuid4().hex
    # when two requests arrive
    first = client.get("/probe/rate-limited/", HTTP_X_PROBE=key)
    second = client.get("/probe/rate-limited/", HTTP_X_PROBE=key)
    # then the second is limited and says when to retry
    assert first.status_code == 200
    assert_problem(second, status=429, code="rate_limited")
    assert 1 <= int(second["Retry-After"]) <= 60


# --- 500 -------------------------------------------------------------------------------


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("path", ["/probe/boom/", "/probe/boom-plain/"])
def test_unhandled_exception_is_500_problem_in_every_mode(client, settings, debug, path):
    # given DEBUG on or off
    settings.DEBUG = debug
    # when a view raises
    response = client.get(path)
    # then the answer is problem+json without the traceback or the exception's text
    problem = assert_problem(response, status=500, code="internal_error")
    assert "boom" not in response.content.decode()
    assert problem["title"] == "Internal server error"


def test_unhandled_exception_is_logged_with_its_traceback(client, caplog):
    # the client sees nothing, so the operator must see everything
    with caplog.at_level("ERROR", logger="core.problems"):
        client.get("/probe/boom/")
    records = [r for r in caplog.records if r.name == "core.problems"]
    assert len(records) == 1
    assert records[0].exc_info and records[0].exc_info[0] is RuntimeError


def test_every_error_carries_the_request_id(client):
    response = client.get("/nope", HTTP_X_REQUEST_ID="trace-me-1")
    assert response["X-Request-ID"] == "trace-me-1"


# --- 503 (database unavailable) ---------------------------------------------------------


@pytest.mark.parametrize("error_class", ["OperationalError", "InterfaceError"])
def test_database_unavailable_is_503_problem_with_retry_after(error_class):
    # given a request whose view hit a database that is down (a restart, a failover)
    from django import db
    from django.test import RequestFactory

    from core.problems import ProblemMiddleware

    request = RequestFactory().post("/api/v1/orders/")
    middleware = ProblemMiddleware(lambda r: None)
    # when the exception reaches the middleware
    response = middleware.process_exception(
        request, getattr(db, error_class)("the database system is starting up")
    )
    # then the client gets a retryable 503, not a 500 with a trace
    body = assert_problem(response, status=503, code="service_unavailable")
    assert response["Retry-After"] == "1"
    assert "starting up" not in body["detail"]
