"""The pages that problem `type` URIs resolve to: `/problems/<code>` and the index `/problems/`.

An HTML page for people (what happened, what to do, the members the body carries), or the
same as JSON for `Accept: application/json`. An unknown code is the usual 404 problem+json.
Rendered without a request context: no session, no database, nothing but the registry
(core/problem_types.py).
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_safe

from core.problem_types import PROBLEM_TYPE_PATH, PROBLEM_TYPES, ProblemType
from core.problems import problem_response

_OFFERED = ["text/html", "application/json"]
# The pages change only with a deployment.
_MAX_AGE_SECONDS = 3600


def _rich(text: str) -> SafeString:
    """The registry's plain text for HTML: escaped, with `backtick spans` as <code>."""
    pieces = [
        format_html("<code>{}</code>", piece) if index % 2 else escape(piece)
        for index, piece in enumerate(text.split("`"))
    ]
    return format_html_join("", "{}", ((piece,) for piece in pieces))


def _wants_json(request: HttpRequest) -> bool:
    return request.get_preferred_type(_OFFERED) == "application/json"


def _as_json(problem_type: ProblemType) -> dict[str, Any]:
    return {
        "type": problem_type.uri,
        "code": problem_type.code,
        "title": problem_type.title,
        "status": problem_type.status,
        "meaning": problem_type.meaning,
        "action": problem_type.action,
        "members": problem_type.members,
        "from_proxy": problem_type.from_proxy,
    }


def _example_body(problem_type: ProblemType) -> str:
    """What a body of this type looks like (members beyond the five shown by name only)."""
    body: dict[str, Any] = {
        "type": problem_type.uri,
        "title": problem_type.title,
        "status": problem_type.status or 400,
        "detail": "What happened to this request, in words.",
        "code": problem_type.code,
    }
    body.update({name: "…" for name in problem_type.members})
    return json.dumps(body, indent=2, ensure_ascii=False)


def _finish(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    patch_vary_headers(response, ["Accept"])
    patch_cache_control(response, public=True, max_age=_MAX_AGE_SECONDS)
    return response


@require_safe
def problem_type_page(request: HttpRequest, code: str) -> HttpResponse:
    problem_type = PROBLEM_TYPES.get(code)
    if problem_type is None:
        return problem_response(
            status=404,
            code="not_found",
            detail=f"No problem type is named {code!r}; {PROBLEM_TYPE_PATH} lists them all.",
        )
    if _wants_json(request):
        return _finish(request, JsonResponse(_as_json(problem_type)))
    status_line = (
        f"{problem_type.status} {HTTPStatus(problem_type.status).phrase}"
        if problem_type.status
        else "any 4xx or 5xx status"
    )
    html = render_to_string(
        "core/problems/problem_type.html",
        {
            "problem_type": problem_type,
            "meaning": _rich(problem_type.meaning),
            "action": _rich(problem_type.action),
            "members": [(name, _rich(text)) for name, text in problem_type.members.items()],
            "status_line": status_line,
            "example": _example_body(problem_type),
            "index": PROBLEM_TYPE_PATH,
        },
    )
    return _finish(request, HttpResponse(html))


@require_safe
def problem_type_index(request: HttpRequest) -> HttpResponse:
    problem_types = sorted(PROBLEM_TYPES.values(), key=lambda t: (t.status or 999, t.code))
    if _wants_json(request):
        payload = {"problem_types": [_as_json(t) for t in problem_types]}
        return _finish(request, JsonResponse(payload))
    html = render_to_string("core/problems/index.html", {"problem_types": problem_types})
    return _finish(request, HttpResponse(html))
