"""The API and the probes skip the admin's middlewares: two MIDDLEWARE entries mark the span.

The JSON API authenticates with an API key, sets no cookie and renders no page to frame:
sessions, CSRF, Django auth, messages, X-Frame-Options, history's request context and axes
are the admin's (and the HTML pages'). In settings.MIDDLEWARE they stay where they were,
between ApiPathsMiddleware and ApiPathsEnd:

    ApiPathsMiddleware -> Session -> Common -> Csrf -> ... -> Axes -> ApiPathsEnd -> rest
                   \\-- API paths: Common ------------------------------^

An API path goes from ApiPathsMiddleware straight to what follows ApiPathsEnd, through a
CommonMiddleware of its own (the only one of the span the API uses). Every other path, the
admin's included, takes the span as before, in the same order. They stay listed, not hidden
inside one wrapper, because Django's checks look for them there (`check --deploy` for CSRF
and X-Frame-Options, the admin's for sessions/auth/messages, axes' for its middleware).

Django still runs CsrfViewMiddleware.process_view for every request (its handler collects
the hooks of every listed middleware): DRF's views are csrf_exempt, so for the API it
returns at once, and a POST to a probe is refused as it always was.

An API path never resolves to an admin view: URLs resolve by prefix, and /api/v1/ and the
probes hold only API views. A path not listed here takes the admin's span.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import cast

from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.middleware.common import CommonMiddleware

API_PATH_PREFIX = "/api/v1/"
PROBE_PATHS = frozenset(("/healthz", "/readyz", "/metrics"))

Handler = Callable[[HttpRequest], HttpResponseBase]

# Django builds MIDDLEWARE from the last entry to the first, in one thread: ApiPathsEnd is
# built just before the ApiPathsMiddleware of the same handler and leaves it the rest here.
_being_built = threading.local()


def is_api_path(path: str) -> bool:
    return path.startswith(API_PATH_PREFIX) or path in PROBE_PATHS


class ApiPathsEnd:
    """Where the admin-only span of MIDDLEWARE ends (a pass-through)."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response
        _being_built.after_span = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)


class ApiPathsMiddleware:
    """Sends API and probe paths past the admin-only span, through CommonMiddleware alone."""

    def __init__(self, get_response: Handler) -> None:
        after_span = getattr(_being_built, "after_span", None)
        if after_span is None:
            raise ImproperlyConfigured(
                "core.api_middleware.ApiPathsEnd must follow ApiPathsMiddleware in MIDDLEWARE"
            )
        del _being_built.after_span
        self.admin = get_response
        # Wrapped as Django wraps each listed middleware: exceptions become responses.
        # Sync only, as every middleware here (no async_capable): the result is a response.
        self.api = cast(Handler, convert_exception_to_response(CommonMiddleware(after_span)))

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if is_api_path(request.path_info):
            return self.api(request)
        return self.admin(request)
