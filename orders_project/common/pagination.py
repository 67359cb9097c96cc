"""Cursor pagination shared by the API: `{"next", "previous", "results"}`, `?page_size` <= 100."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination

MAX_PAGE_SIZE = 100


class StrictCursorPagination(CursorPagination):
    page_size = 20
    max_page_size = MAX_PAGE_SIZE
    page_size_query_param = "page_size"

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            raise ValidationError(
                {"page_size": [f"Must be an integer from 1 to {self.max_page_size}."]}
            )
        return int(raw)

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except Exception as exc:  # DRF answers 404 for a bad cursor; it is bad input.
            if request.query_params.get(self.cursor_query_param) is None:
                raise
            raise ValidationError({"cursor": ["Invalid cursor."]}) from exc


class CreatedCursorPagination(StrictCursorPagination):
    """Oldest first with a unique tie-breaker, so pages never skip or repeat rows."""

    ordering = ("created_at", "id")


class NewestFirstCursorPagination(StrictCursorPagination):
    ordering = ("-created_at", "-id")
