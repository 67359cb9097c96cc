"""The event contract over HTTP (outbox/event_contract.py): /api/events/ is the AsyncAPI
document (JSON, or the YAML file as kept in the repository), /api/events/schemas/<file>
each registered JSON Schema.

Public like /api/schema/: a contract, no data. The document's relative `$ref`s
(`schemas/order.created.v1.json`) resolve against /api/events/ to the schema views.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_safe

from core.problems import problem_response
from outbox.event_contract import asyncapi_document, asyncapi_text, event_schema_texts

# The files change only with a deployment.
_MAX_AGE_SECONDS = 300


def _cacheable(response: HttpResponse) -> HttpResponse:
    patch_cache_control(response, public=True, max_age=_MAX_AGE_SECONDS)
    return response


@require_safe
def event_contract(request: HttpRequest) -> HttpResponse:
    return _cacheable(JsonResponse(asyncapi_document(), json_dumps_params={"indent": 2}))


@require_safe
def event_contract_yaml(request: HttpRequest) -> HttpResponse:
    return _cacheable(HttpResponse(asyncapi_text(), content_type="application/yaml"))


@require_safe
def event_schema_file(request: HttpRequest, file_name: str) -> HttpResponse:
    text = event_schema_texts().get(file_name)
    if text is None:
        return problem_response(
            status=404,
            code="not_found",
            detail=f"No event schema named {file_name!r}: /api/events/ lists them.",
        )
    return _cacheable(HttpResponse(text, content_type="application/schema+json"))
