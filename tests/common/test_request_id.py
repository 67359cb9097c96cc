"""X-Request-ID accepted when sane, else generated; echoed; in every JSON log line (SPEC §7)."""

from __future__ import annotations

import json
import logging
import re

import pytest
from django.test import Client

from core.logging import JsonFormatter
from core.request_id import RequestIdLogFilter

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


@pytest.mark.parametrize("sane", ["abc-123", "0f0e.req:7_x", "A" * 128])
def test_a_sane_request_id_is_echoed(client, sane):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=sane)
    assert response["X-Request-ID"] == sane


@pytest.mark.parametrize(
    "insane",
    ["has space", "A" * 129, "abc\n", "abc\r\nSet-Cookie: x=1", "line\nbreak", "ü-nicode", "{}"],
)
def test_an_insane_request_id_is_replaced_by_a_generated_one(client, insane):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=insane)
    assert response.status_code == 200
    assert GENERATED.fullmatch(response["X-Request-ID"])


def test_a_request_id_is_generated_when_none_is_sent(client):
    first = client.get("/healthz")["X-Request-ID"]
    second = client.get("/healthz")["X-Request-ID"]
    assert GENERATED.fullmatch(first)
    assert GENERATED.fullmatch(second)
    assert first != second


def _json_lines(records) -> list[dict]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(record)) for record in records]


def test_every_request_writes_one_json_access_line(client, caplog):
    # when a request is served
    with caplog.at_level(logging.INFO, logger="orders.access"):
        response = client.get("/healthz", HTTP_X_REQUEST_ID="log-me-1")
    # then exactly one access line, as one JSON object, with the fields SPEC §7 names
    records = [r for r in caplog.records if r.name == "orders.access"]
    assert len(records) == 1
    (line,) = _json_lines(records)
    assert line["method"] == "GET"
    assert line["path"] == "/healthz"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0
    assert line["request_id"] == "log-me-1" == response["X-Request-ID"]
    assert line["level"] == "info"
    assert line["ts"].endswith("+00:00")


@pytest.mark.django_db
def test_error_responses_are_logged_with_their_status(client, caplog):
    with caplog.at_level(logging.INFO, logger="orders.access"):
        response = client.get("/nope")
    (line,) = _json_lines(r for r in caplog.records if r.name == "orders.access")
    assert line["status"] == 404
    assert line["request_id"] == response["X-Request-ID"]


@pytest.mark.urls("tests.common.urls_for_tests")
def test_log_lines_written_inside_a_view_carry_the_request_id(client, caplog):
    # given the configured log filter on the capturing handler
    caplog.handler.addFilter(RequestIdLogFilter())
    try:
        # when a view logs while serving a request
        with caplog.at_level(logging.INFO, logger="tests.probe"):
            client.get("/probe/log/", HTTP_X_REQUEST_ID="inside-1")
    finally:
        caplog.handler.filters.clear()
    # then its line carries the request's id, and the id does not outlive the request
    (line,) = _json_lines(r for r in caplog.records if r.name == "tests.probe")
    assert line["request_id"] == "inside-1"
    outside = logging.LogRecord("tests.probe", logging.INFO, __file__, 1, "after", (), None)
    RequestIdLogFilter().filter(outside)
    assert outside.request_id is None


def test_json_formatter_keeps_exceptions_on_one_line():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), exc_info=__import__("sys").exc_info()
        )
    text = JsonFormatter().format(record)
    assert "\n" not in text
    assert "ValueError" in json.loads(text)["exc_info"]
