"""Request ids: accepted from `X-Request-ID` when sane, else generated; echoed and logged.

The id lives in a context variable so that log lines, Celery task headers and outbox
events (`correlation_id`) written while serving the request all carry it.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar

from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
# Printable, no spaces, bounded: anything else is replaced so logs cannot be forged.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
access_logger = logging.getLogger("orders.access")


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(value: str | None):
    """Bind a request id for the current context; returns the token to reset it."""
    return _request_id.set(value)


def reset_request_id(token) -> None:
    _request_id.reset(token)


def new_request_id() -> str:
    return uuid.uuid4().hex


def sanitize_request_id(raw: str | None) -> str:
    # fullmatch, not match: "$" also matches before a trailing newline, which would let
    # "abc\n" through into a response header (BadHeaderError) and into the logs.
    if raw and _SANE_REQUEST_ID.fullmatch(raw):
        return raw
    return new_request_id()


class RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


class RequestIdMiddleware:
    """Outermost middleware: binds the id, echoes it, writes one access log line."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = sanitize_request_id(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = request_id  # type: ignore[attr-defined]
        token = set_request_id(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id
            access_logger.info(
                "request",
                extra={
                    # Explicit, so handlers without RequestIdLogFilter still get it.
                    "request_id": request_id,
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            return response
        finally:
            reset_request_id(token)
