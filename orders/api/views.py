"""Orders API: one viewset, each action parse → service → render (SPEC §3).

Creation's idempotency and per-customer limit wrap `create` (orders/api/idempotency.py).
Each order's `payment` is read through orders.selectors, once per page or per order, and
handed to the serializer; a creation's 201 is rendered from memory, with no read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from catalog.errors import InsufficientStock, ProductUnavailable
from clients.authentication import HasApiKey
from core.pagination import NewestFirstCursorPagination
from core.ratelimit import rate_limit_enforce
from core.unit_of_work import UnitOfWork
from orders import metrics
from orders.api import openapi
from orders.api.idempotency import idempotent_create
from orders.api.serializers import (
    OrderCreateInputSerializer,
    OrderListQuerySerializer,
    OrderOutputSerializer,
)
from orders.errors import OrderNotFound
from orders.models import CancelReason, Order
from orders.selectors import order_get_for_client, order_list_for_client, order_payment_summaries
from orders.services import OrderLine, order_cancel, order_create, order_create_in

# Business refusals that are stored and replayed like a success (SPEC §3).
STORED_REFUSALS = (InsufficientStock, ProductUnavailable)


def order_location(order_id) -> str:
    return f"/api/v1/orders/{order_id}/"


def _render_orders(orders: Sequence[Order]) -> Any:
    payments = order_payment_summaries(order_ids=[order.pk for order in orders])
    return OrderOutputSerializer(orders, many=True, context={"payments": payments}).data


def _render_order(order: Order) -> Any:
    payments = order_payment_summaries(order_ids=[order.pk])
    return OrderOutputSerializer(order, context={"payments": payments}).data


# One serializer instance renders every 201. DRF builds a ModelSerializer's fields anew for
# each instance (about 1 ms of CPU per order, bench/order_cpu_profile.py); bound fields keep
# no per-request state, and a creation's context never changes (below), so sharing one
# instance between requests and threads is safe as long as only to_representation() is used.
_CREATED_ORDER_SERIALIZER = OrderOutputSerializer(context={"payments": {}})


def _render_created_order(order: Order) -> Any:
    """The 201 of a creation, from memory: order_create leaves the order's items loaded (by
    sku, as order_get reads them), and a just-created order's payment is still `requesting`,
    which the API shows as null (payments.selectors), so no read follows the INSERTs."""
    return _CREATED_ORDER_SERIALIZER.to_representation(order)


def _limit_per_customer(request, data) -> None:
    rate_limit_enforce(
        request,
        scope="order_create",
        identity=f"{request.user.pk}:{data['email']}",
        rate=settings.ORDER_RATE_LIMIT,
    )


def _count_created(status: int) -> None:
    outcome = {201: "created", 409: InsufficientStock.code, 422: ProductUnavailable.code}
    metrics.ORDERS_CREATED.labels(outcome=outcome.get(status, "other")).inc()


# No docstrings on the viewset or its actions: drf-spectacular would publish them as the
# operations' descriptions.
@extend_schema(tags=["orders"])
class OrderViewSet(viewsets.ViewSet):
    permission_classes = [HasApiKey]
    lookup_url_kwarg = "order_id"
    lookup_value_converter = "uuid"

    def get_view_name(self) -> str:
        # OPTIONS reports it: the names of the three APIViews this viewset replaced.
        return self.name or ("Order Detail" if self.detail else "Order List Create")

    @openapi.ORDERS_LIST
    def list(self, request):
        query = OrderListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        orders = order_list_for_client(
            client=request.user,
            status=query.validated_data.get("status"),
            email=(query.validated_data.get("email") or "").lower() or None,
        )
        paginator = NewestFirstCursorPagination()
        page = paginator.paginate_queryset(orders, request, view=self)
        return paginator.get_paginated_response(_render_orders(page))

    @openapi.ORDERS_CREATE
    @idempotent_create(
        input_serializer=OrderCreateInputSerializer,
        limit=_limit_per_customer,
        stored_errors=STORED_REFUSALS,
        count_outcome=_count_created,
        in_one_round_trip=lambda view, request, data, work: view.create_in(request, data, work),
    )
    def create(self, request, data):
        order = order_create(client=request.user, email=data["email"], lines=_lines(data))
        return _created(order)

    def create_in(self, request, data, work: UnitOfWork) -> Response | None:
        """`create` as one unit of work (orders.services.order_create_in)."""
        order = order_create_in(
            work=work, client=request.user, email=data["email"], lines=_lines(data)
        )
        return None if order is None else _created(order)

    @openapi.ORDERS_RETRIEVE
    def retrieve(self, request, order_id):
        return Response(_render_order(_client_order(request, order_id)))

    @openapi.ORDERS_CANCEL
    @action(detail=True, methods=["post"], name="Order Cancel")
    def cancel(self, request, order_id):
        order_cancel(order_id=order_id, client=request.user, reason=CancelReason.CUSTOMER_REQUESTED)
        return Response(_render_order(_client_order(request, order_id)))


def _lines(data) -> list[OrderLine]:
    return [OrderLine(item["product_id"], item["quantity"]) for item in data["items"]]


def _created(order: Order) -> Response:
    headers = {"Location": order_location(order.pk)}
    return Response(_render_created_order(order), status=201, headers=headers)


def _client_order(request, order_id) -> Order:
    order = order_get_for_client(client=request.user, order_id=order_id)
    if order is None:
        raise OrderNotFound("No such order.")
    return order
