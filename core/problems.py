"""Every error the service returns is RFC 9457 problem+json with a stable `code`.

`problem_for` is the one function that turns an exception (or a bare error status) into a
problem; everything that answers with an error calls it:
- `DomainError` subclasses, raised by services, each carrying its status and code;
- `problem_exception_handler`, DRF's single exception hook;
- `ProblemMiddleware`, which catches what escapes DRF (unknown URLs, oversized bodies,
  unhandled exceptions, Django's own 4xx responses) so that no HTML page or stack trace
  ever reaches an API client, whatever DEBUG says;
- Django's handler400/403/404/500, and the idempotency store's stored refusals.

A problem's `type` is the relative URI of its page (`/problems/<code>`) and its `title` the
type's own, both from the one registry of codes, core/problem_types.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import set_rollback

from core.problem_types import PROBLEM_TYPES, problem_type_uri

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"

# Paths that are pages for people, not API resources: their own error pages stay.
HTML_PREFIXES = ("/admin/",)


class DomainError(Exception):
    """A business rule said no. Subclasses set `status` and `code`; the handler renders them.

    The code must be registered in core/problem_types.py (a subclass with an unknown code
    fails at import); its title comes from there.
    """

    status: int = 400
    code: str = "bad_request"
    title: str = PROBLEM_TYPES["bad_request"].title

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        problem_type = PROBLEM_TYPES.get(cls.code)
        if problem_type is None:
            raise TypeError(
                f"{cls.__qualname__}.code {cls.code!r} is not a problem type: "
                "add it to core/problem_types.py"
            )
        cls.title = problem_type.title

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.title
        self.extra = extra
        super().__init__(self.detail)


class ValidationFailed(DomainError):
    status = 400
    code = "validation_error"

    def __init__(self, errors: list[dict[str, str]], detail: str | None = None) -> None:
        super().__init__(
            detail or "See `errors` for the fields that need attention.", errors=errors
        )


def problem_title(code: str, status: int) -> str:
    """The title of the code's problem type (an unregistered code, which the tests forbid,
    falls back to the status phrase rather than failing the error answer itself)."""
    problem_type = PROBLEM_TYPES.get(code)
    if problem_type is not None:
        return problem_type.title
    logger.error("problem code without a problem type", extra={"code": code})
    return HTTPStatus(status).phrase if status in _STATUSES else "Error"


def problem_body(
    *, status: int, code: str, detail: str | None = None, **extra: Any
) -> dict[str, Any]:
    title = problem_title(code, status)
    body: dict[str, Any] = {
        "type": problem_type_uri(code),
        "title": title,
        "status": status,
        "detail": detail or title,
        "code": code,
    }
    body.update(extra)
    return body


@dataclass(frozen=True)
class Problem:
    """An error as the client gets it: the problem+json body and the headers that go with it."""

    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> int:
        return self.body["status"]


def problem_bytes(problem: Problem) -> bytes:
    """The body as DRF renders every API response, so a stored or middleware-made problem is
    byte for byte what the exception handler would have sent."""
    return JSONRenderer().render(problem.body)


def problem_http_response(problem: Problem) -> HttpResponse:
    """A plain Django response, for code outside DRF (middleware, Django's handlers)."""
    response = HttpResponse(
        problem_bytes(problem), status=problem.status, content_type=PROBLEM_CONTENT_TYPE
    )
    for name, value in problem.headers.items():
        response[name] = value
    return response


def problem_response(
    *,
    status: int,
    code: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> HttpResponse:
    """A problem its caller describes itself (health checks, input guards): no exception."""
    body = problem_body(status=status, code=code, detail=detail, **extra)
    return problem_http_response(Problem(body, dict(headers or {})))


_STATUSES = {status.value for status in HTTPStatus}

# DRF exception class -> code. Order matters: subclasses first.
_DRF_CODES: list[tuple[type[Exception], str]] = [
    (drf_exceptions.NotAuthenticated, "not_authenticated"),
    (drf_exceptions.AuthenticationFailed, "authentication_failed"),
    (drf_exceptions.PermissionDenied, "permission_denied"),
    (drf_exceptions.NotFound, "not_found"),
    (drf_exceptions.MethodNotAllowed, "method_not_allowed"),
    (drf_exceptions.NotAcceptable, "not_acceptable"),
    (drf_exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (drf_exceptions.Throttled, "rate_limited"),
    # A body that is not JSON fails "the body is a JSON object" (SPEC §3): validation_error.
    (drf_exceptions.ParseError, "validation_error"),
    (drf_exceptions.ValidationError, "validation_error"),
]


def flatten_validation_errors(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """DRF's nested error dicts/lists -> [{"field": "items[0].quantity", "message": ...}]."""
    errors: list[dict[str, str]] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int):
                # ListField / ListSerializer child errors come keyed by position.
                errors.extend(flatten_validation_errors(value, f"{prefix}[{key}]"))
                continue
            name = (
                "" if key in ("non_field_errors", api_settings.NON_FIELD_ERRORS_KEY) else str(key)
            )
            path = f"{prefix}.{name}" if prefix and name else (prefix or name)
            errors.extend(flatten_validation_errors(value, path))
    elif isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            errors.extend({"field": prefix, "message": str(item)} for item in detail)
        else:
            for index, item in enumerate(detail):
                if item in ({}, []):
                    continue
                errors.extend(flatten_validation_errors(item, f"{prefix}[{index}]"))
    else:
        errors.append({"field": prefix, "message": str(detail)})
    return errors


def problem_for(error: BaseException | int) -> Problem:
    """The one place that turns an exception, or a bare error status, into a problem.

    Every error answer comes from here: DRF's exception handler, ProblemMiddleware (what
    escapes DRF, and Django's own 4xx responses), Django's handler400/403/404/500, and the
    idempotency store (a stored refusal is replayed byte for byte). An exception this
    module does not know is an internal error: its text never reaches the client.
    """
    if isinstance(error, int):
        return Problem(problem_body(status=error, code=_status_code(error)))
    if isinstance(error, DomainError):
        body = problem_body(
            status=error.status, code=error.code, detail=error.detail, **error.extra
        )
        return Problem(body, dict(getattr(error, "headers", None) or {}))
    if isinstance(error, drf_exceptions.APIException):
        return _drf_problem(error)
    return _django_problem(error)


# A bare status (Django's own 4xx page rewritten, a plain 400).
_STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _status_code(status: int) -> str:
    return _STATUS_CODES.get(status, "internal_error" if status >= 500 else "error")


def _drf_problem(exc: drf_exceptions.APIException) -> Problem:
    # An APIException we have no entry for keeps its own default_code if that names a
    # problem type (so its `type` resolves), else it is the catch-all `error`.
    code = str(getattr(exc, "default_code", "") or "error")
    if code not in PROBLEM_TYPES:
        code = "error"
    for exc_class, exc_code in _DRF_CODES:
        if isinstance(exc, exc_class):
            code = exc_code
            break
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    detail: str | None
    if isinstance(exc, drf_exceptions.ValidationError):
        extra["errors"] = flatten_validation_errors(exc.detail)
        detail = "See `errors` for the fields that need attention."
    elif isinstance(exc, drf_exceptions.ParseError):
        extra["errors"] = [{"field": "", "message": str(exc.detail)}]
        detail = str(exc.detail)
    else:
        detail = str(exc.detail) if not isinstance(exc.detail, (dict, list)) else None
    if isinstance(exc, drf_exceptions.Throttled):
        # Throttled.__init__ sets `wait`; djangorestframework-stubs does not declare it.
        wait: float | None = exc.wait  # type: ignore[attr-defined]
        if wait is not None:
            headers["Retry-After"] = str(max(1, int(wait + 0.999)))
    # APIView sets auth_header from the view's first authenticator (and turns the 401 into a
    # 403 when the view has none), so the challenge always matches the view.
    auth_header = getattr(exc, "auth_header", None)
    if auth_header and exc.status_code == 401:
        headers["WWW-Authenticate"] = auth_header
    body = problem_body(status=exc.status_code, code=code, detail=detail, **extra)
    return Problem(body, headers)


_DATABASE_ERRORS = (OperationalError, InterfaceError)


def _django_problem(error: BaseException) -> Problem:
    if isinstance(error, Http404):
        return Problem(problem_body(status=404, code="not_found"))
    if isinstance(error, PermissionDenied):
        return Problem(problem_body(status=403, code="permission_denied"))
    if isinstance(error, RequestDataTooBig):  # before SuspiciousOperation, its base class
        detail = f"Request bodies are limited to {settings.MAX_REQUEST_BODY_BYTES} bytes."
        return Problem(problem_body(status=413, code="payload_too_large", detail=detail))
    if isinstance(error, SuspiciousOperation):
        return Problem(problem_body(status=400, code="bad_request"))
    if isinstance(error, _DATABASE_ERRORS):
        # Connection refused or lost, server restarting, deadlock or lock timeout: transient,
        # and the transaction rolled back, so the client may retry the same request (same key).
        detail = "The database is unavailable for a moment; the request changed nothing. Retry."
        body = problem_body(status=503, code="service_unavailable", detail=detail)
        return Problem(body, {"Retry-After": "1"})
    detail = "Something went wrong on our side; the request changed nothing. Retry later."
    return Problem(problem_body(status=500, code="internal_error", detail=detail))


# What DRF's handler answers itself. Anything else escapes the view to ProblemMiddleware,
# which answers it through problem_for too, and logs it (a database outage or a bug).
_ANSWERED_IN_DRF = (
    DomainError,
    drf_exceptions.APIException,
    Http404,
    PermissionDenied,
    RequestDataTooBig,
)


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: what a view raised, as problem+json."""
    if not isinstance(exc, _ANSWERED_IN_DRF):
        return None
    problem = problem_for(exc)
    set_rollback()  # as DRF's own handler does: an error never commits half a request
    response = Response(problem.body, status=problem.status, headers=problem.headers)
    response.content_type = PROBLEM_CONTENT_TYPE
    return response


class ProblemMiddleware:
    """Last line of the error contract for everything outside DRF's exception handler."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self._declared_body_too_large(request):
            return problem_http_response(problem_for(RequestDataTooBig()))
        response = self.get_response(request)
        if self._needs_rewrite(request, response):
            return self._rewrite(response)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if request.path.startswith(HTML_PREFIXES) and settings.DEBUG:
            return None
        problem = problem_for(exception)
        if isinstance(exception, _DATABASE_ERRORS):
            logger.warning(
                "database unavailable",
                extra={"path": request.path, "error": f"{type(exception).__name__}: {exception}"},
            )
        elif problem.status >= 500:
            logger.exception("unhandled exception", extra={"path": request.path})
        return problem_http_response(problem)

    @staticmethod
    def _declared_body_too_large(request: HttpRequest) -> bool:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return False
        return length > settings.MAX_REQUEST_BODY_BYTES

    @staticmethod
    def _needs_rewrite(request: HttpRequest, response: HttpResponse) -> bool:
        if response.status_code < 400 or request.path.startswith(HTML_PREFIXES):
            return False
        content_type = response.get("Content-Type", "")
        return not content_type.startswith(PROBLEM_CONTENT_TYPE)

    @staticmethod
    def _rewrite(response: HttpResponse) -> HttpResponse:
        rewritten = problem_http_response(problem_for(response.status_code))
        for header in ("Allow", "Retry-After", "WWW-Authenticate", "X-Request-ID"):
            if header in response:
                rewritten[header] = response[header]
        return rewritten


def handler400(request, exception=None):
    # Django routes every SuspiciousOperation here, including a body over
    # DATA_UPLOAD_MAX_MEMORY_SIZE read outside a view (e.g. by the CSRF middleware); only
    # that one has a problem of its own, every other is the plain 400.
    too_large = isinstance(exception, RequestDataTooBig)
    return problem_http_response(problem_for(exception if too_large else 400))


def handler403(request, exception=None):
    return problem_http_response(problem_for(exception or PermissionDenied()))


def handler404(request, exception=None):
    return problem_http_response(problem_for(exception or Http404()))


def handler500(request):
    # Django hands over no exception: to the client it is a failure of ours, unnamed.
    return problem_http_response(problem_for(Exception()))
