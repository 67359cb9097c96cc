"""How the API documents itself in OpenAPI: problems, headers, parameters, page shapes.

Every view describes its errors as the problems it can answer, built by the same
`problem_for` that answers them (`documented(...)`), so each documented `code`, title, extra
member and `Retry-After` comes from the code that sends it. `ApiAutoSchema` (the
DEFAULT_SCHEMA_CLASS) turns them into one component per operation and status, whose `code`
is an enum of exactly those codes (`OrdersCreate409Problem`: `insufficient_stock`,
`idempotency_key_in_use`, `idempotency_key_reused`), with one example per code. It also
documents the headers every response or every limited response carries: `X-Request-ID`,
the rate-limit headers and `Retry-After`.

(The security schemes are the apps': clients/openapi.py, payments/api/views.py.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import OperationalError
from django.http import Http404
from drf_spectacular.drainage import warn
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework import exceptions as drf_exceptions

from core.pagination import MAX_PAGE_SIZE, StrictCursorPagination
from core.problems import PROBLEM_CONTENT_TYPE, Problem, problem_for
from core.request_id import REQUEST_ID_HEADER

# RFC 9457's members; anything else a problem carries is documented per code.
STANDARD_MEMBERS = ("type", "title", "status", "detail", "code")


FIELD_ERRORS_MEMBER: dict[str, Any] = {
    "type": "array",
    "description": "Each field that needs attention (`field` is empty for the body itself).",
    "items": {
        "type": "object",
        "properties": {
            "field": {
                "type": "string",
                "description": 'Path of the field, e.g. "items[0].quantity".',
            },
            "message": {"type": "string"},
        },
        "required": ["field", "message"],
    },
}


@dataclass(frozen=True)
class DocumentedProblem:
    """One problem an operation can answer: an example as it is sent, and the JSON Schema of
    each member it carries beyond RFC 9457's (`products` for insufficient_stock...)."""

    problem: Problem
    members: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    summary: str = ""

    @property
    def status(self) -> int:
        return self.problem.status

    @property
    def code(self) -> str:
        return self.problem.body["code"]


def documented(
    error: BaseException | int, *, summary: str = "", **members: dict[str, Any]
) -> DocumentedProblem:
    """The problem `error` is answered with, as the exception handler renders it."""
    return DocumentedProblem(problem_for(error), members, summary)


# The problems the service answers outside any business rule, each from the exception that
# causes it (core/problems.py decides their codes and titles).
def validation_error(detail: dict[str, Any], *, summary: str = "") -> DocumentedProblem:
    """400 `validation_error` as a DRF serializer (or the query guard) raises it."""
    return documented(
        drf_exceptions.ValidationError(detail), summary=summary, errors=FIELD_ERRORS_MEMBER
    )


def bad_path() -> DocumentedProblem:
    # core/input_guard.py: a path holding NUL or unpaired surrogates, before routing.
    return documented(SuspiciousOperation(), summary="A path holding NUL or lone surrogates.")


def not_authenticated() -> DocumentedProblem:
    return documented(drf_exceptions.NotAuthenticated(), summary="No X-API-Key header.")


def authentication_failed() -> DocumentedProblem:
    return documented(
        drf_exceptions.AuthenticationFailed("Unknown or revoked API key."),
        summary="An unknown or revoked key.",
    )


def not_found(summary: str = "") -> DocumentedProblem:
    return documented(Http404(), summary=summary)


def unsupported_media_type() -> DocumentedProblem:
    return documented(
        drf_exceptions.UnsupportedMediaType("text/plain"), summary="A body that is not JSON."
    )


def rate_limited() -> DocumentedProblem:
    return documented(
        drf_exceptions.Throttled(wait=12, detail="Too many requests; retry later."),
        summary="Over a rate limit: wait Retry-After seconds.",
    )


def every_request() -> list[DocumentedProblem]:
    """What any request to any operation may be answered with, whatever its business."""
    return [
        # core/input_guard.py: a query parameter holding NUL or unpaired surrogates.
        validation_error(
            {"search": ["Null characters and unpaired surrogates are not allowed."]},
            summary="A query parameter the service cannot process.",
        ),
        documented(
            drf_exceptions.NotAcceptable("Could not satisfy the request Accept header."),
            summary="An Accept header that excludes JSON.",
        ),
        # core/problems.py ProblemMiddleware: a declared Content-Length over the limit.
        documented(RequestDataTooBig(), summary="A body over MAX_REQUEST_BODY_BYTES."),
        documented(Exception(), summary="A failure of ours; the request changed nothing."),
        documented(
            OperationalError(),
            summary="The database is unavailable for a moment; retry after Retry-After.",
        ),
    ]


def problems_by_status(
    problems: Iterable[DocumentedProblem],
) -> dict[int, list[DocumentedProblem]]:
    """The problems by status, each code once (the first one given wins)."""
    by_status: dict[int, list[DocumentedProblem]] = {}
    for problem in problems:
        same = by_status.setdefault(problem.status, [])
        if problem.code not in {known.code for known in same}:
            same.append(problem)
    return dict(sorted(by_status.items()))


@dataclass(frozen=True)
class ProblemGroup:
    """The problems one operation answers with one status: one schema component."""

    status: int
    problems: tuple[DocumentedProblem, ...]

    @property
    def codes(self) -> list[str]:
        return sorted(problem.code for problem in self.problems)

    def member_schemas(self) -> dict[str, dict[str, Any]]:
        members: dict[str, dict[str, Any]] = {}
        for problem in self.problems:
            for name, schema in problem.members.items():
                members.setdefault(name, schema)
        return members

    def undocumented_members(self) -> list[str]:
        sent = {name for problem in self.problems for name in problem.problem.body}
        return sorted(sent - set(STANDARD_MEMBERS) - set(self.member_schemas()))

    def code_schema(self) -> dict[str, Any]:
        titles = {problem.code: problem.problem.body["title"] for problem in self.problems}
        return {
            "type": "string",
            "enum": self.codes,
            "description": "\n".join(f"* `{code}` - {titles[code]}" for code in self.codes),
        }

    def schema(self, code_ref: dict[str, str]) -> dict[str, Any]:
        """The problem object; `code_ref` points at the component of `code_schema()` (a
        property holding an enum itself would be renamed by drf-spectacular's enum hook)."""
        members = self.member_schemas()
        always = [
            name
            for name in members
            if all(name in problem.problem.body for problem in self.problems)
        ]
        codes = ", ".join(f"`{code}`" for code in self.codes)
        which = f"one of {codes}" if len(self.codes) > 1 else codes
        return {
            "type": "object",
            "description": (
                f"RFC 9457 problem details: {self.status} {HTTPStatus(self.status).phrase}, "
                f"code {which}."
            ),
            "properties": {
                "type": {
                    "type": "string",
                    "format": "uri-reference",
                    "description": "Identifies the problem type; a page that explains it.",
                },
                "title": {"type": "string", "description": "Short summary of the problem type."},
                "status": {"type": "integer", "description": "The HTTP status code."},
                "detail": {"type": "string", "description": "What happened, for a person."},
                "code": code_ref,
                **members,
            },
            "required": [*STANDARD_MEMBERS, *always],
        }

    def examples(self) -> list[OpenApiExample]:
        return [
            OpenApiExample(
                problem.code,
                value=problem.problem.body,
                summary=problem.summary or problem.problem.body["title"],
            )
            for problem in sorted(self.problems, key=lambda p: p.code)
        ]

    def retry_after(self) -> bool | None:
        """Whether Retry-After is sent: True by every problem here, False by some only,
        None by none."""
        sending = [("Retry-After" in problem.problem.headers) for problem in self.problems]
        return True if all(sending) else (False if any(sending) else None)


def problem_responses(*problems: DocumentedProblem) -> dict:
    """`responses=` entries for the problems an operation answers, grouped by status: each
    becomes a `<OperationId><status>Problem` component listing exactly their codes."""
    return {
        (status, PROBLEM_CONTENT_TYPE): OpenApiResponse(
            response=ProblemGroup(status, tuple(group)),
            description=(
                f"{HTTPStatus(status).phrase}: "
                + ", ".join(f"`{problem.code}`" for problem in sorted(group, key=_by_code))
            ),
        )
        for status, group in problems_by_status(problems).items()
    }


def _by_code(problem: DocumentedProblem) -> str:
    return problem.code


# --- headers -----------------------------------------------------------------------------

_REQUEST_ID: dict[str, Any] = {
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:\-]{1,128}$"},
    "description": (
        "The request's id: the `X-Request-ID` the client sent when it is 1–128 of "
        "`A–Z a–z 0–9 . _ : -`, else one the service made up. It is in the service's logs "
        "and in the `correlation_id` of the events the request caused."
    ),
}

# What the limiter sends (core/ratelimit.py): the older trio on every limited response, and
# the IETF draft's structured fields (draft-ietf-httpapi-ratelimit-headers), which name the
# policy they report (e.g. "api"). A response carries the tightest of the limits it counted
# against.
RATE_LIMIT_HEADERS: dict[str, dict[str, Any]] = {
    "RateLimit-Policy": {
        "schema": {"type": "string", "example": '"api";q=600;w=60'},
        "description": (
            "IETF draft: the limit applied, as a structured field: quota `q` requests per "
            'window `w` seconds, e.g. `"api";q=600;w=60`.'
        ),
    },
    "RateLimit": {
        "schema": {"type": "string", "example": '"api";r=599;t=60'},
        "description": (
            "IETF draft: where the client stands, as a structured field: `r` requests "
            'remaining, `t` seconds until the window frees a slot, e.g. `"api";r=599;t=60`.'
        ),
    },
    "RateLimit-Limit": {
        "schema": {"type": "integer", "minimum": 0},
        "description": "Requests allowed per window (older header, kept for existing clients).",
    },
    "RateLimit-Remaining": {
        "schema": {"type": "integer", "minimum": 0},
        "description": "Requests left in the current window (older header).",
    },
    "RateLimit-Reset": {
        "schema": {"type": "integer", "minimum": 0},
        "description": "Seconds until the window frees a slot (older header).",
    },
}
# The headers every limited response carries today (core.ratelimit.RateDecision.headers):
# documented as required on success and 429, the others as optional until they are sent.
RATE_LIMIT_HEADERS_ALWAYS_SENT = (
    "RateLimit-Policy",
    "RateLimit",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
)

_RETRY_AFTER: dict[str, Any] = {
    "schema": {"type": "integer", "minimum": 0},
    "description": "Seconds to wait before retrying.",
}


def _camel(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))


def _header(definition: Mapping[str, Any], *, required: bool) -> dict[str, Any]:
    return {**definition, "required": required}


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus what this API documents the same way everywhere:
    problem components per operation and status, and the response headers."""

    def _get_response_for_code(
        self, serializer, status_code, media_types=None, direction="response"
    ):
        group = serializer.response if isinstance(serializer, OpenApiResponse) else None
        if isinstance(group, ProblemGroup):
            component = self._problem_component(group)
            serializer = OpenApiResponse(
                response=component.ref,
                description=serializer.description,
                examples=[*serializer.examples, *group.examples()],
            )
        response = super()._get_response_for_code(serializer, status_code, media_types, direction)
        headers = dict(response.get("headers", {}))
        headers.update(self._standard_headers(int(status_code), group))
        return {"headers": headers, **{k: v for k, v in response.items() if k != "headers"}}

    def _problem_component(self, group: ProblemGroup) -> ResolvedComponent:
        """The problem's component, its `code` an enum component of its own.

        A status with one code is shared by every operation that answers it the same way
        (`RateLimitedProblem`); several codes make one per operation and status
        (`OrdersCreate409Problem`: exactly that operation's codes)."""
        operation_id = self.get_operation_id()
        undocumented = group.undocumented_members()
        if undocumented:
            warn(f"{operation_id} {group.status}: problem members without a schema: {undocumented}")
        if len(group.codes) == 1:
            shared = self._problem_components(_camel(group.codes[0]) + "Problem", group)
            if shared is not None:
                return shared
        name = f"{_camel(operation_id)}{group.status}Problem"
        component = self._problem_components(name, group)
        if component is None:
            raise ValueError(f"two different problem components named {name}")
        return component

    def _problem_components(self, name: str, group: ProblemGroup) -> ResolvedComponent | None:
        """Registers `name` and `<name>Code` for the group, or finds them registered for the
        same schema; None when `name` is taken by another schema."""
        code = ResolvedComponent(
            name=f"{name}Code",
            type=ResolvedComponent.SCHEMA,
            schema=group.code_schema(),
            object=f"{name}Code",
        )
        problem = ResolvedComponent(
            name=name,
            type=ResolvedComponent.SCHEMA,
            schema=group.schema(code.ref),
            object=name,
        )
        if problem in self.registry:
            registered = self.registry[problem]
            return registered if registered.schema == problem.schema else None
        self.registry.register_on_missing(code)
        self.registry.register_on_missing(problem)
        return problem

    def _standard_headers(self, status: int, group: ProblemGroup | None) -> dict[str, Any]:
        headers = {REQUEST_ID_HEADER: _header(_REQUEST_ID, required=True)}
        if self._is_rate_limited():
            # Success and 429 always went through the limiter; other errors may not have
            # (a missing key, an unknown URL, a body refused before the view).
            counted = status < 300 or status == 429
            for name, definition in RATE_LIMIT_HEADERS.items():
                required = counted and name in RATE_LIMIT_HEADERS_ALWAYS_SENT
                headers[name] = _header(definition, required=required)
        retry_after = group.retry_after() if group is not None else None
        if retry_after is not None:
            headers["Retry-After"] = _header(_RETRY_AFTER, required=retry_after)
        return headers

    def _is_rate_limited(self) -> bool:
        return bool(getattr(self.view, "throttle_classes", None))

    def _get_parameters(self):
        parameters = super()._get_parameters()
        blank_means_absent = {
            parameter.name
            for parameter in self.get_override_parameters()
            if isinstance(parameter, QueryFilter)
        }
        for parameter in parameters:
            if (
                parameter["in"] == OpenApiParameter.QUERY
                and parameter["name"] in blank_means_absent
            ):
                parameter["allowEmptyValue"] = True
        return parameters


class QueryFilter(OpenApiParameter):
    """A query filter where an empty value (`?status=`) means no filter, as if absent: it is
    documented with `allowEmptyValue`, not with `""` among its values."""

    def __init__(self, name: str, schema: dict[str, Any], description: str) -> None:
        super().__init__(name, schema, OpenApiParameter.QUERY, description=description)


def page_size_parameter() -> OpenApiParameter:
    """`?page_size=` as StrictCursorPagination accepts it (anything else is a 400)."""
    return OpenApiParameter(
        "page_size",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
        description=StrictCursorPagination.page_size_query_description,
    )


def cursor_parameter() -> OpenApiParameter:
    """`?cursor=` for views that paginate by hand (the paginated viewsets get it from DRF)."""
    return OpenApiParameter(
        "cursor",
        {"type": "string"},
        description=StrictCursorPagination.cursor_query_description,
    )
