"""Refuse request input that no view can store or search for, before any view sees it.

PostgreSQL `text` cannot hold NUL (psycopg refuses to send it), and a lone UTF-16
surrogate cannot be encoded to UTF-8 at all: either one in a query string or path, passed
on to a lookup (the admin's changelist filters and search, an API filter), ended as a 500.
Checking every view's every parameter would miss the next one, so this middleware checks
the decoded path and every query key and value once, for every URL: 400, a plain HTML page
under the staff site; elsewhere problem+json, `validation_error` naming each offending
query parameter (as the API's own filter serializers would) or `bad_request` for a path.
Request bodies are the parsers' and forms' job (DRF and Django form fields already refuse
NUL and surrogates in strings).

Lone surrogates cannot come out of Django's own decoding today (invalid UTF-8 becomes
U+FFFD); they are checked anyway because the check costs nothing and a different server or
decoding would otherwise reopen the 500.

It also answers 400 when a GET to the staff site fails on a value the admin took from the
URL: a database `DataError` (`?name__regex=(`, which Django's admin allows on any local
field) or an `OverflowError` (`?created_at__year=99999999999`: Django's date lookups and
date hierarchy build a datetime from it unchecked). The input was wrong, not the server.
API views never build queries from raw lookups, so these stay 500s there, for someone to
look at.
"""

from __future__ import annotations

import logging
import re

from django.core.exceptions import SuspiciousOperation
from django.db import DataError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.utils.html import escape

from core.problems import HTML_PREFIXES, problem_response

logger = logging.getLogger(__name__)

# NUL, and the surrogate range (only ever unpaired in a Python str).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

_MESSAGE = "Null characters and unpaired surrogates are not allowed."


def _query_errors(request: HttpRequest) -> list[dict[str, str]]:
    """One validation error per query parameter whose name or value cannot be stored."""
    errors = []
    for key, values in request.GET.lists():
        if _UNSTORABLE.search(key) or any(_UNSTORABLE.search(value) for value in values):
            # The name is echoed as the field, made printable (as DRF names body fields).
            errors.append({"field": _UNSTORABLE.sub("\ufffd", key), "message": _MESSAGE})
    return errors


def _html_bad_request(detail: str) -> HttpResponse:
    # A plain page for people; the admin's own templates need context we do not have.
    return HttpResponseBadRequest(
        f"<!doctype html><title>Bad request (400)</title>"
        f"<h1>Bad request (400)</h1><p>{escape(detail)}</p>"
    )


def _bad_request(request: HttpRequest, detail: str) -> HttpResponse:
    if request.path.startswith(HTML_PREFIXES):
        return _html_bad_request(detail)
    return problem_response(status=400, code="bad_request", detail=detail)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    if _UNSTORABLE.search(request.path):
        return _bad_request(
            request, f"The path holds characters that cannot be processed. {_MESSAGE}"
        )
    errors = _query_errors(request)
    if not errors:
        return None
    if request.path.startswith(HTML_PREFIXES):
        return _html_bad_request(
            f"The query string holds characters that cannot be processed. {_MESSAGE}"
        )
    # As a query parameter that a serializer refused: validation_error naming it.
    return problem_response(
        status=400,
        code="validation_error",
        detail="See `errors` for the fields that need attention.",
        errors=errors,
    )


class QueryInputMiddleware:
    """400 for unstorable characters in the path or query; 400 for admin GETs whose URL
    values the database or datetime refused (see the module docstring)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            refusal = _refusal(request)
        except SuspiciousOperation:  # e.g. more than DATA_UPLOAD_MAX_NUMBER_FIELDS keys
            return _bad_request(request, "The query string has too many parameters.")
        return refusal or self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if (
            isinstance(exception, (DataError, OverflowError))
            and request.method in ("GET", "HEAD")
            and request.path.startswith(HTML_PREFIXES)
        ):
            logger.info(
                "admin query input refused",
                extra={"path": request.path, "error": type(exception).__name__},
            )
            return _bad_request(
                request, "A filter, search or page value in the URL cannot be used."
            )
        return None
