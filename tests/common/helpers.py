"""Assertions shared by tests that check the error contract (SPEC §3 Errors)."""

from __future__ import annotations

import json
import socket

PROBLEM_CONTENT_TYPE = "application/problem+json"
# Things that must never reach a client: stack traces, HTML error pages, SQL, driver names.
LEAK_MARKERS = (
    "Traceback",
    'File "',
    "<html",
    "<!DOCTYPE",
    "SELECT ",
    "psycopg",
    "django.db",
    "hunter2",
    "RuntimeError",
)


def assert_problem(response, *, status: int, code: str) -> dict:
    """The response is RFC 9457 problem+json with the given status and code; returns it."""
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    text = response.content.decode()
    body = json.loads(text)
    assert {"type", "title", "status", "detail", "code"} <= body.keys(), body
    assert body["status"] == status
    assert body["code"] == code
    # Relative, so a stored response replays byte for byte whatever the Host.
    assert body["type"] == "/problems/" + code
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    for marker in LEAK_MARKERS:
        assert marker not in text, f"{marker!r} leaked into {text}"
    return body


def free_port() -> int:
    """A localhost TCP port on which nothing listens (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
