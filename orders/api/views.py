"""Orders API views: parse, call one service, render (SPEC §3)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.errors import InsufficientStock, ProductUnavailable
from clients.authentication import HasApiKey
from core.openapi import page_size_parameter, problem_responses
from core.pagination import NewestFirstCursorPagination
from core.ratelimit import rate_limit_enforce
from orders import metrics
from orders.api.serializers import (
    OrderCreateInputSerializer,
    OrderListQuerySerializer,
    OrderOutputSerializer,
)
from orders.errors import OrderNotFound
from orders.idempotency import (
    MAX_KEY_LENGTH,
    StoredResponse,
    idempotency_claim,
    idempotency_key_parse,
    idempotency_release,
    idempotent_execute,
    request_fingerprint,
)
from orders.models import CancelReason
from orders.selectors import order_get_for_client, order_list_for_client
from orders.services import OrderLine, order_cancel, order_create

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Business refusals that are stored and replayed like a success (SPEC §3).
STORED_REFUSALS = (InsufficientStock, ProductUnavailable)


class OrderPageSerializer(serializers.Serializer):
    """One cursor page of orders, as NewestFirstCursorPagination renders it."""

    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = OrderOutputSerializer(many=True)

    class Meta:
        ref_name = "PaginatedOrderList"


def order_location(order_id) -> str:
    return f"/api/v1/orders/{order_id}/"


def _stored_to_http(stored: StoredResponse, *, replayed: bool) -> HttpResponse:
    response = HttpResponse(
        stored.body,
        status=stored.status,
        content_type=stored.headers.get("Content-Type", "application/json"),
    )
    if "Location" in stored.headers:
        response["Location"] = stored.headers["Location"]
    response[REPLAYED_HEADER] = "true" if replayed else "false"
    return response


@extend_schema(tags=["orders"])
class OrderListCreateView(APIView):
    permission_classes = [HasApiKey]

    @extend_schema(
        parameters=[
            OrderListQuerySerializer,
            page_size_parameter(),
            OpenApiParameter("cursor", OpenApiTypes.STR),
        ],
        responses={200: OrderPageSerializer, **problem_responses(400, 401, 429)},
        operation_id="v1_orders_list",
    )
    def get(self, request):
        query = OrderListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        orders = order_list_for_client(
            client=request.user,
            status=query.validated_data.get("status"),
            email=(query.validated_data.get("email") or "").lower() or None,
        )
        paginator = NewestFirstCursorPagination()
        page = paginator.paginate_queryset(orders, request, view=self)
        return paginator.get_paginated_response(OrderOutputSerializer(page, many=True).data)

    @extend_schema(
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
                    f"1–{MAX_KEY_LENGTH} printable ASCII characters; the RFC 8941 quoted "
                    'form (`"abc"`) equals the bare one.'
                ),
            ),
            OpenApiParameter(
                "Location",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                required=True,
                description="The order's URL.",
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
        ],
        responses={
            201: OrderOutputSerializer,
            **problem_responses(400, 401, 409, 413, 415, 422, 429),
        },
        description=(
            "400 `validation_error`, `idempotency_key_missing`, `idempotency_key_invalid`; "
            "409 `insufficient_stock`, `idempotency_key_reused`, `idempotency_key_in_use`; "
            "422 `product_unavailable`; 429 `rate_limited`."
        ),
    )
    def post(self, request):
        key = idempotency_key_parse(request.headers.get(IDEMPOTENCY_HEADER))
        payload = request.data
        serializer = OrderCreateInputSerializer(data=payload)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        email = data["email"].lower()

        outcome = idempotency_claim(
            client=request.user, key=key, fingerprint=request_fingerprint(payload)
        )
        if isinstance(outcome, StoredResponse):
            metrics.IDEMPOTENT_REPLAYS.inc()
            return _stored_to_http(outcome, replayed=True)
        claim = outcome
        try:
            # Only a request that claimed a new key counts against the creation limit.
            rate_limit_enforce(
                request,
                scope="order_create",
                identity=f"{request.user.pk}:{email}",
                rate=settings.ORDER_RATE_LIMIT,
            )
        except BaseException:
            # Limited (429, not stored) or the limiter itself failed (5xx): either way the
            # key must be free for the retry, not held until its lease runs out.
            idempotency_release(claim=claim)
            raise

        def create() -> StoredResponse:
            order = order_create(
                client=request.user,
                email=email,
                lines=[OrderLine(item["product_id"], item["quantity"]) for item in data["items"]],
            )
            return StoredResponse(
                status=201,
                body=JSONRenderer().render(OrderOutputSerializer(order).data),
                headers={"Content-Type": "application/json", "Location": order_location(order.pk)},
                order_id=order.pk,
            )

        stored = idempotent_execute(claim=claim, operation=create, stored_errors=STORED_REFUSALS)
        metrics.ORDERS_CREATED.labels(outcome=_outcome_label(stored)).inc()
        return _stored_to_http(stored, replayed=False)


def _outcome_label(stored: StoredResponse) -> str:
    if stored.status == 201:
        return "created"
    return {409: InsufficientStock.code, 422: ProductUnavailable.code}.get(stored.status, "other")


@extend_schema(tags=["orders"])
class OrderDetailView(APIView):
    permission_classes = [HasApiKey]

    @extend_schema(responses={200: OrderOutputSerializer, **problem_responses(401, 404, 429)})
    def get(self, request, order_id):
        order = order_get_for_client(client=request.user, order_id=order_id)
        if order is None:
            raise OrderNotFound("No such order.")
        return Response(OrderOutputSerializer(order).data)


@extend_schema(tags=["orders"])
class OrderCancelView(APIView):
    permission_classes = [HasApiKey]

    @extend_schema(
        request=None,
        responses={200: OrderOutputSerializer, **problem_responses(401, 404, 409, 429)},
        description="409 `order_not_cancellable` once the order is paid.",
    )
    def post(self, request, order_id):
        order_cancel(order_id=order_id, client=request.user, reason=CancelReason.CUSTOMER_REQUESTED)
        order = order_get_for_client(client=request.user, order_id=order_id)
        return Response(OrderOutputSerializer(order).data)
