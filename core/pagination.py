"""Cursor pagination shared by the API: `{"next", "previous", "results"}`, `?page_size` <= 100."""

from __future__ import annotations

from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination

MAX_PAGE_SIZE = 100


class StrictCursorPagination(CursorPagination):
    page_size = 20
    max_page_size = MAX_PAGE_SIZE
    page_size_query_param = "page_size"
    cursor_query_description = "Opaque: take it from a page's `next` or `previous` URL."
    page_size_query_description = f"1–{MAX_PAGE_SIZE}, default {page_size}."

    # What OpenAPI shows as a page's `next` in examples (the products list is the one
    # paginated viewset; the orders list paginates by hand and documents its own page).
    example_next = "http://127.0.0.1:8000/api/v1/products/?cursor=cD0yMDI2LTAzLTAy"

    def get_paginated_response_schema(self, schema):
        """The page as OpenAPI shows it: every member always present, the links null at
        either end (DRF's own marks only `results` required)."""
        return page_schema(schema, example_next=self.example_next)

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        # isdigit() alone accepts "²", which int() then rejects with a 500.
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= self.max_page_size:
            raise ValidationError(
                {"page_size": [f"Must be an integer from 1 to {self.max_page_size}."]}
            )
        return int(raw)

    def paginate_queryset(self, queryset, request, view=None):
        self._model = queryset.model  # decode_cursor needs it to check the position
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request):
        try:
            cursor = super().decode_cursor(request)
        except Exception as exc:  # DRF answers 404 for a bad cursor; it is bad input.
            if request.query_params.get(self.cursor_query_param) is None:
                raise
            raise _invalid_cursor() from exc
        if cursor is not None and cursor.position is not None:
            # DRF decodes the position as a str; djangorestframework-stubs says int.
            self._check_position(cursor.position)  # type: ignore[arg-type]
        return cursor

    def _check_position(self, position: str) -> None:
        """A cursor is client input: a forged position ("p=garbage") must be a 400, not a
        500 from the ORM when it filters created_at by it."""
        field_name = self.ordering[0].lstrip("-") if self.ordering else None
        model = getattr(self, "_model", None)
        if not field_name or model is None:
            return
        try:
            field = model._meta.get_field(field_name)
        except FieldDoesNotExist:
            return
        try:
            value = field.to_python(position)
        except (DjangoValidationError, ValueError, TypeError) as exc:
            raise _invalid_cursor() from exc
        if value is None:
            raise _invalid_cursor()


def page_schema(results: dict, *, example_next: str) -> dict:
    """The JSON Schema of a cursor page of `results` (an array schema)."""
    link = {"type": "string", "format": "uri", "nullable": True}
    return {
        "type": "object",
        "properties": {
            "next": {
                **link,
                "description": "The next page; null on the last one.",
                "example": example_next,
            },
            "previous": {
                **link,
                "description": "The previous page; null on the first one.",
                "example": None,
            },
            "results": results,
        },
        "required": ["next", "previous", "results"],
    }


def _invalid_cursor() -> ValidationError:
    return ValidationError({"cursor": ["Invalid cursor."]})


class CreatedCursorPagination(StrictCursorPagination):
    """Oldest first with a unique tie-breaker, so pages never skip or repeat rows."""

    ordering = ("created_at", "id")


class NewestFirstCursorPagination(StrictCursorPagination):
    ordering = ("-created_at", "-id")
