"""How the products API documents itself (SPEC §3): summaries, descriptions, parameters,
examples and the problems each read answers, applied to the viewset in views.py."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema

from catalog.api.serializers import SEARCH_MAX_LENGTH, ProductOutputSerializer
from core.openapi import (
    bad_path,
    every_request,
    not_found,
    page_size_parameter,
    problem_responses,
    rate_limited,
    validation_error,
)

PRODUCT = {
    "id": "5f0e8a9b-1c2d-4e3f-9a8b-7c6d5e4f3a2b",
    "sku": "MUG-001",
    "name": "Enamel mug",
    "description": "A white enamel mug, 350 ml.",
    "price": "12.50",
    "currency": "USD",
    "stock": 42,
    "is_active": True,
    "created_at": "2026-02-27T09:00:00.000000Z",
    "updated_at": "2026-03-01T16:42:10.511000Z",
}

_PUBLIC = "Public: no API key needed; limited per client address (`API_RATE_LIMIT`)."

PRODUCTS_LIST = extend_schema(
    operation_id="products_list",
    summary="List products",
    description=(
        "The products for sale (inactive ones are not listed), oldest first, a cursor page "
        "at a time: follow `next` until it is null. `search` matches a substring of the "
        "name or the sku, without regard to case. " + _PUBLIC
    ),
    parameters=[
        OpenApiParameter(
            "search",
            {"type": "string", "maxLength": SEARCH_MAX_LENGTH},
            description=f"Case-insensitive substring of name or sku (≤ {SEARCH_MAX_LENGTH}).",
        ),
        page_size_parameter(),
    ],
    responses={
        # many=True: the viewset's paginator makes it a page (PaginatedProductList).
        200: ProductOutputSerializer(many=True),
        **problem_responses(
            validation_error(
                {"page_size": ["Must be an integer from 1 to 100."]},
                summary="A search too long, a page size out of range or a forged cursor.",
            ),
            rate_limited(),
            *every_request(),
        ),
    },
    examples=[OpenApiExample("A product", value=PRODUCT, response_only=True)],
)

PRODUCTS_RETRIEVE = extend_schema(
    operation_id="products_retrieve",
    summary="Read a product",
    description="One product for sale; unknown and inactive products are `404`. " + _PUBLIC,
    parameters=[
        OpenApiParameter(
            "product_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The product's id."
        )
    ],
    responses={
        200: ProductOutputSerializer,
        **problem_responses(
            bad_path(),
            not_found("No such product for sale (unknown, or inactive)."),
            rate_limited(),
            *every_request(),
        ),
    },
    examples=[OpenApiExample("A product", value=PRODUCT, response_only=True)],
)
