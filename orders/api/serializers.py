"""Input and output shapes of the orders API (SPEC §3)."""

from __future__ import annotations

import re

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from orders.models import CancelReason, Order, OrderItem, OrderStatus

MAX_LINES = 50
MAX_QUANTITY = 1000


class StrictIntegerField(serializers.IntegerField):
    """An integer in the JSON sense: "2", 2.0 and true are refused, not coerced."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


# RFC 9562's string form, 8-4-4-4-12 hex digits, the one the API itself writes. DRF's
# UUIDField (Python's UUID()) also takes JSON integers, dash-less hex, braces and
# `urn:uuid:`: one product with many spellings is a contract nobody wrote down, and a
# consumer bug (an id sent as a number) should be a 400, not silently "work".
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


class CanonicalUUIDField(serializers.UUIDField):
    """A UUID given only as its canonical 36-character string (either case)."""

    default_error_messages = {
        "invalid": "Must be a UUID string in the canonical 8-4-4-4-12 hex form.",
    }

    def to_internal_value(self, data):
        if not isinstance(data, str) or not _CANONICAL_UUID.fullmatch(data):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class OrderLineInputSerializer(serializers.Serializer):
    product_id = CanonicalUUIDField(help_text="An active product's id.")
    quantity = StrictIntegerField(min_value=1, max_value=MAX_QUANTITY)

    class Meta:
        ref_name = "OrderLine"


class OrderCreateInputSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254, help_text="The customer's email.")
    # A ListField (not many=True) so that the schema states minItems/maxItems too.
    items = serializers.ListField(
        child=OrderLineInputSerializer(),
        allow_empty=False,
        min_length=1,
        max_length=MAX_LINES,
        help_text=f"1–{MAX_LINES} lines, each product once.",
    )

    class Meta:
        ref_name = "OrderCreate"

    def validate_email(self, email: str) -> str:
        # One customer whatever the case: the per-customer limit and `?email=` compare it.
        return email.lower()

    def validate_items(self, items):
        seen: set = set()
        duplicates = []
        for index, item in enumerate(items):
            if item["product_id"] in seen:
                duplicates.append(index)
            seen.add(item["product_id"])
        if duplicates:
            raise serializers.ValidationError(
                [
                    {"product_id": ["This product is already listed in another line."]}
                    if index in duplicates
                    else {}
                    for index in range(len(items))
                ]
            )
        return items


class OrderListQuerySerializer(serializers.Serializer):
    # An empty value (`?status=`) is no filter, as if the parameter were absent.
    status = serializers.ChoiceField(choices=OrderStatus.choices, required=False, allow_blank=True)
    email = serializers.EmailField(required=False, allow_blank=True)


# Output serializers declare every field read-only: they only render, and OpenAPI then
# marks each field required (a field with a model default would otherwise be optional).


class OrderItemOutputSerializer(serializers.ModelSerializer):
    product_id = serializers.UUIDField(read_only=True)
    quantity = serializers.IntegerField(read_only=True, min_value=1, max_value=MAX_QUANTITY)

    class Meta:
        model = OrderItem
        ref_name = "OrderItem"
        fields = ["product_id", "sku", "name", "unit_price", "quantity", "line_total"]
        read_only_fields = fields
        extra_kwargs = {
            "sku": {"help_text": "The product's sku when the order was placed."},
            "name": {"help_text": "The product's name when the order was placed."},
            "unit_price": {"help_text": "The product's price when the order was placed."},
        }


class PaymentSummarySerializer(serializers.Serializer):
    # The payments app owns this vocabulary (orders does not import it: SPEC's layering).
    status = serializers.CharField(
        read_only=True,
        help_text=(
            "The payment's status at the provider: pending, succeeded, failed, "
            "cancel_requested, cancelled, refund_requested, refund_pending or refunded."
        ),
    )
    provider_payment_id = serializers.CharField(
        read_only=True, allow_null=True, help_text="The provider's id for the payment."
    )


class OrderOutputSerializer(serializers.ModelSerializer):
    cancel_reason = serializers.SerializerMethodField()
    items = OrderItemOutputSerializer(many=True, read_only=True)
    payment = serializers.SerializerMethodField()

    class Meta:
        model = Order
        ref_name = "Order"
        fields = [
            "id",
            "status",
            "cancel_reason",
            "email",
            "currency",
            "total",
            "items",
            "payment",
            "created_at",
            "updated_at",
            "paid_at",
            "cancelled_at",
            "expires_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "email": {"help_text": "The customer's email, lower-cased."},
            "total": {"help_text": "Σ line_total, in `currency`."},
            "expires_at": {
                "help_text": "The payment deadline: unpaid by then, the order is cancelled."
            },
        }

    @extend_schema_field(
        serializers.ChoiceField(
            choices=CancelReason.choices,
            allow_null=True,
            read_only=True,
            help_text="Why the order was cancelled; null unless it is `cancelled`.",
        )
    )
    def get_cancel_reason(self, order: Order) -> str | None:
        return order.cancel_reason or None

    @extend_schema_field(
        PaymentSummarySerializer(
            allow_null=True,
            read_only=True,
            help_text="Null until the provider has been asked for the payment.",
        )
    )
    def get_payment(self, order: Order) -> dict | None:
        # context["payments"]: the view reads a page's payments at once
        # (orders.selectors.order_payment_summaries); an order without one has none yet.
        summary = self.context["payments"].get(order.pk)
        if summary is None or not summary.status:
            return None
        return {
            "status": summary.status,
            "provider_payment_id": summary.provider_payment_id or None,
        }
