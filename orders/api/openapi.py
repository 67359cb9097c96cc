"""How the orders API documents itself: each operation's summary, description, parameters,
examples and the problems it answers (SPEC §3), applied to the viewset's actions in views.py.

The problem examples are the code's own: built by core.problems.problem_for from the errors
the actions raise (a real serializer's validation errors, the idempotency key parser's
refusals), so a documented `code`, title or member cannot drift from what is sent.
"""

from __future__ import annotations

from collections.abc import Callable

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers

from catalog.errors import InsufficientStock, ProductUnavailable
from core.openapi import (
    FIELD_ERRORS_MEMBER,
    DocumentedProblem,
    QueryFilter,
    authentication_failed,
    bad_path,
    cursor_parameter,
    documented,
    every_request,
    not_authenticated,
    not_found,
    page_size_parameter,
    problem_responses,
    rate_limited,
    unsupported_media_type,
    validation_error,
)
from orders.api.idempotency import IDEMPOTENCY_HEADER, REPLAYED_HEADER
from orders.api.serializers import OrderCreateInputSerializer, OrderOutputSerializer
from orders.errors import IdempotencyKeyInUse, IdempotencyKeyReused, OrderNotCancellable
from orders.idempotency import MAX_KEY_LENGTH, idempotency_key_parse
from orders.models import OrderStatus

ORDER_ID = "0b6c4d1e-2f3a-4b5c-8d9e-0f1a2b3c4d5e"
PRODUCT_ID = "5f0e8a9b-1c2d-4e3f-9a8b-7c6d5e4f3a2b"
OTHER_PRODUCT_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"

# --- examples ----------------------------------------------------------------------------

CREATE_REQUEST = {
    "email": "ada@example.com",
    "items": [
        {"product_id": PRODUCT_ID, "quantity": 2},
        {"product_id": OTHER_PRODUCT_ID, "quantity": 1},
    ],
}

PENDING_ORDER = {
    "id": ORDER_ID,
    "status": "pending_payment",
    "cancel_reason": None,
    "email": "ada@example.com",
    "currency": "USD",
    "total": "31.50",
    "items": [
        {
            "product_id": PRODUCT_ID,
            "sku": "MUG-001",
            "name": "Enamel mug",
            "unit_price": "12.50",
            "quantity": 2,
            "line_total": "25.00",
        },
        {
            "product_id": OTHER_PRODUCT_ID,
            "sku": "TEA-014",
            "name": "Loose-leaf tea, 100 g",
            "unit_price": "6.50",
            "quantity": 1,
            "line_total": "6.50",
        },
    ],
    "payment": None,
    "created_at": "2026-03-02T10:15:00.123456Z",
    "updated_at": "2026-03-02T10:15:00.123456Z",
    "paid_at": None,
    "cancelled_at": None,
    "expires_at": "2026-03-02T10:30:00.123456Z",
}

PAID_ORDER = {
    **PENDING_ORDER,
    "status": "paid",
    "payment": {"status": "succeeded", "provider_payment_id": "pay_8f14e45fceea167a"},
    "updated_at": "2026-03-02T10:15:02.481516Z",
    "paid_at": "2026-03-02T10:15:02.481516Z",
}

CANCELLED_ORDER = {
    **PENDING_ORDER,
    "status": "cancelled",
    "cancel_reason": "customer_requested",
    "payment": {"status": "pending", "provider_payment_id": "pay_8f14e45fceea167a"},
    "updated_at": "2026-03-02T10:20:41.000000Z",
    "cancelled_at": "2026-03-02T10:20:41.000000Z",
}


def _raised(call: Callable[[], object]) -> Exception:
    """The exception `call` raises: an example of exactly what the code refuses with."""
    try:
        call()
    except Exception as error:
        return error
    raise AssertionError(f"{call} raised nothing")


def _invalid_order() -> Exception:
    body = {"email": "not-an-email", "items": [{"product_id": PRODUCT_ID, "quantity": 0}]}
    return _raised(lambda: OrderCreateInputSerializer(data=body).is_valid(raise_exception=True))


# --- problems ----------------------------------------------------------------------------

_PRODUCTS_SHORT = {
    "type": "array",
    "description": "Each line that is short, with the units still available.",
    "items": {
        "type": "object",
        "properties": {
            "product_id": {"type": "string", "format": "uuid"},
            "requested": {"type": "integer"},
            "available": {"type": "integer"},
        },
        "required": ["product_id", "requested", "available"],
    },
}
_PRODUCT_IDS = {
    "type": "array",
    "description": "The ids of the products that are unknown or not for sale.",
    "items": {"type": "string", "format": "uuid"},
}
# The component drf-spectacular makes of OrderStatus (settings ENUM_NAME_OVERRIDES): the
# `?status=` filter and order_not_cancellable's `order_status` take the orders' own values.
_ORDER_STATUS_REF = {"$ref": "#/components/schemas/OrderStatusEnum"}
_ORDER_STATUS = {
    "allOf": [_ORDER_STATUS_REF],
    "description": "The order's status (paid or refunded), which cannot be cancelled.",
}


def _api_key_problems() -> list[DocumentedProblem]:
    return [not_authenticated(), authentication_failed(), rate_limited()]


def _order_not_found() -> DocumentedProblem:
    return not_found("No such order for this API client (another client's order too).")


def _list_problems() -> list[DocumentedProblem]:
    return [
        validation_error(
            {"status": ['"shipped" is not a valid choice.']},
            summary="An unknown status, email, page size or cursor.",
        ),
        *_api_key_problems(),
        *every_request(),
    ]


def _create_problems() -> list[DocumentedProblem]:
    return [
        documented(
            _invalid_order(),
            summary="The body breaks a rule: see `errors` (the JSON, email, 1–50 lines, "
            "quantities 1–1000, each product once).",
            errors=FIELD_ERRORS_MEMBER,
        ),
        documented(
            _raised(lambda: idempotency_key_parse(None)), summary="No Idempotency-Key header."
        ),
        documented(
            _raised(lambda: idempotency_key_parse("x" * (MAX_KEY_LENGTH + 1))),
            summary="Longer than 255 characters, or not printable ASCII.",
        ),
        documented(
            InsufficientStock([{"product_id": PRODUCT_ID, "requested": 2, "available": 1}]),
            summary="Not enough stock for a line: nothing was reserved. Stored and replayed.",
            products=_PRODUCTS_SHORT,
        ),
        documented(
            IdempotencyKeyReused(
                "This Idempotency-Key was used with a different request body; use a new key."
            ),
            summary="The key was used with another body: nothing changed.",
        ),
        documented(
            IdempotencyKeyInUse("Retry after the first request with this key finishes."),
            summary="The first request with this key is still running: retry after Retry-After.",
        ),
        documented(
            ProductUnavailable([OTHER_PRODUCT_ID]),
            summary="An unknown or inactive product. Stored and replayed.",
            product_ids=_PRODUCT_IDS,
        ),
        unsupported_media_type(),
        *_api_key_problems(),
        *every_request(),
    ]


def _detail_problems() -> list[DocumentedProblem]:
    return [bad_path(), _order_not_found(), *_api_key_problems(), *every_request()]


def _cancel_problems() -> list[DocumentedProblem]:
    return [
        documented(
            OrderNotCancellable(OrderStatus.PAID.value),
            summary="The order is paid (or refunded): only pending orders can be cancelled.",
            order_status=_ORDER_STATUS,
        ),
        *_detail_problems(),
    ]


# --- operations --------------------------------------------------------------------------

_API_KEY = "Needs `X-API-Key`; a client sees and changes only its own orders."


# many=False: a list action's response would otherwise be documented as an array of pages.
@extend_schema_serializer(many=False)
class OrderPageSerializer(serializers.Serializer):
    """One cursor page of orders, newest first (NewestFirstCursorPagination)."""

    next = serializers.URLField(allow_null=True, help_text="The next page; null on the last one.")
    previous = serializers.URLField(
        allow_null=True, help_text="The previous page; null on the first one."
    )
    results = OrderOutputSerializer(many=True)

    class Meta:
        ref_name = "PaginatedOrderList"


_ORDER_ID_PARAMETER = OpenApiParameter(
    "order_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The order's id."
)
ORDERS_LIST = extend_schema(
    operation_id="orders_list",
    summary="List orders",
    description=(
        "The API client's orders, newest first, a cursor page at a time: follow `next` "
        "until it is null. Filter by `status` and by the customer's `email` (compared "
        "without regard to case); an empty filter (`?status=`) is no filter. " + _API_KEY
    ),
    parameters=[
        QueryFilter("status", _ORDER_STATUS_REF, "Only orders in this status."),
        QueryFilter("email", {"type": "string", "format": "email"}, "Only this customer's orders."),
        page_size_parameter(),
        cursor_parameter(),
    ],
    responses={200: OrderPageSerializer, **problem_responses(*_list_problems())},
    examples=[
        OpenApiExample(
            "A page of orders",
            value={
                "next": "http://127.0.0.1:8000/api/v1/orders/?cursor=cj0xJnA9MjAyNi0wMy0wMg%3D%3D",
                "previous": None,
                "results": [PAID_ORDER],
            },
            response_only=True,
        )
    ],
)

ORDERS_CREATE = extend_schema(
    operation_id="orders_create",
    summary="Place an order",
    description=(
        "Reserves stock for every line at once (all lines or none) at the prices of the "
        "moment and answers `201` with the order in `pending_payment` and its `Location`. "
        "The payment follows asynchronously: poll the order (or read the event stream) "
        "until it is `paid` or `cancelled` (`payment_failed`, `payment_expired`).\n\n"
        "**Idempotency.** `Idempotency-Key` is required. The same key with the same body "
        "(compared as parsed JSON) replays the stored response byte for byte with "
        "`Idempotent-Replayed: true`, and creates nothing; with another body it is `409 "
        "idempotency_key_reused`; while the first request with it still runs, `409 "
        "idempotency_key_in_use` with `Retry-After`. The `201` and the business refusals "
        "(`409 insufficient_stock`, `422 product_unavailable`) are stored for at least 24 h; "
        "`400`, `401`, `429` and `5xx` are not (a retry runs afresh).\n\n"
        "**Limits.** Per API client and customer email (`ORDER_RATE_LIMIT`, 5 per 60 s by "
        "default; replays and `idempotency_key_in_use` do not count against it), besides "
        "the per-client API limit. " + _API_KEY
    ),
    request=OrderCreateInputSerializer,
    parameters=[
        OpenApiParameter(
            IDEMPOTENCY_HEADER,
            {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_KEY_LENGTH,
                # Printable ASCII; `""` is the quoted form of the empty key.
                "pattern": r'^(?!""$)[ -~]+$',
            },
            OpenApiParameter.HEADER,
            required=True,
            description=(
                f"1–{MAX_KEY_LENGTH} printable ASCII characters, unique per order you mean "
                'to place (a UUID will do); the RFC 8941 quoted form (`"abc"`) equals the '
                "bare one. Keys are scoped to the API client."
            ),
        ),
        OpenApiParameter(
            "Location",
            {"type": "string", "format": "uri-reference"},
            OpenApiParameter.HEADER,
            required=True,
            description="The order's path, e.g. `/api/v1/orders/{id}/`.",
            response=[201],
        ),
        OpenApiParameter(
            REPLAYED_HEADER,
            OpenApiTypes.STR,
            OpenApiParameter.HEADER,
            required=True,
            enum=["true", "false"],
            description="`true` when the response is replayed from an earlier request.",
            response=[201, 422],
        ),
        OpenApiParameter(
            REPLAYED_HEADER,
            OpenApiTypes.STR,
            OpenApiParameter.HEADER,
            enum=["true", "false"],
            description=(
                "Sent with `insufficient_stock` (stored and replayed like a success): `true` "
                "when replayed from an earlier request."
            ),
            response=[409],
        ),
    ],
    responses={201: OrderOutputSerializer, **problem_responses(*_create_problems())},
    examples=[
        OpenApiExample("Two lines", value=CREATE_REQUEST, request_only=True),
        OpenApiExample("Created", value=PENDING_ORDER, response_only=True, status_codes=[201]),
    ],
)

ORDERS_RETRIEVE = extend_schema(
    operation_id="orders_retrieve",
    summary="Read an order",
    description=(
        "One order with its lines (as they were priced when it was placed) and its payment "
        "(null until the provider has been asked). Another client's order is `404`. " + _API_KEY
    ),
    parameters=[_ORDER_ID_PARAMETER],
    responses={200: OrderOutputSerializer, **problem_responses(*_detail_problems())},
    examples=[OpenApiExample("A paid order", value=PAID_ORDER, response_only=True)],
)

ORDERS_CANCEL = extend_schema(
    operation_id="orders_cancel",
    summary="Cancel an order",
    description=(
        "Cancels a `pending_payment` order (`cancel_reason: customer_requested`) and puts "
        "its units back in stock; the provider's payment is cancelled asynchronously. "
        "Cancelling a cancelled order answers it again (`200`, nothing changes); a paid or "
        "refunded order is `409 order_not_cancellable`. A cancel racing the payment has "
        "exactly one winner. No request body. " + _API_KEY
    ),
    parameters=[_ORDER_ID_PARAMETER],
    request=None,
    responses={200: OrderOutputSerializer, **problem_responses(*_cancel_problems())},
    examples=[OpenApiExample("The cancelled order", value=CANCELLED_ORDER, response_only=True)],
)
