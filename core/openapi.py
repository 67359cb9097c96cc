"""OpenAPI pieces shared by every API view: the problem+json schema and page sizes.

(The X-API-Key security scheme is the clients app's: clients/authentication.py.)
"""

from __future__ import annotations

from http import HTTPStatus

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_field
from rest_framework import serializers

from core.pagination import MAX_PAGE_SIZE, StrictCursorPagination
from core.problems import PROBLEM_CONTENT_TYPE


class ProblemFieldErrorSerializer(serializers.Serializer):
    field = serializers.CharField(help_text='Path of the field, e.g. "items[0].quantity".')
    message = serializers.CharField()


@extend_schema_field(OpenApiTypes.URI_REF)
class ProblemTypeField(serializers.CharField):
    """A problem's `type`: a relative URI (`uri-reference`, not `uri`)."""


class ProblemSerializer(serializers.Serializer):
    """RFC 9457 problem details, as every error of this API is shaped."""

    type = ProblemTypeField(
        help_text="Relative URI of the page that explains the problem type: /problems/<code>."
    )
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    code = serializers.CharField(help_text="Stable, machine-readable error code.")
    # The metaclass moves declared fields into _declared_fields: `.errors` stays DRF's
    # property at runtime, which mypy cannot see.
    errors = ProblemFieldErrorSerializer(  # type: ignore[assignment]
        many=True, required=False, help_text="Only for validation_error."
    )

    class Meta:
        ref_name = "Problem"


def problem_responses(*statuses: int) -> dict:
    """`responses=` entries documenting problem+json answers for the given statuses."""
    return {
        (status, PROBLEM_CONTENT_TYPE): OpenApiResponse(
            response=ProblemSerializer, description=HTTPStatus(status).phrase
        )
        for status in statuses
    }


def page_size_parameter() -> OpenApiParameter:
    """`?page_size=` as StrictCursorPagination accepts it (anything else is a 400)."""
    return OpenApiParameter(
        "page_size",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
        description=f"1–{MAX_PAGE_SIZE}, default {StrictCursorPagination.page_size}.",
    )
