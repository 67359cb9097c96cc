"""The provider's webhook endpoint (SPEC §5): verify on the raw body, then one service."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from uuid import UUID

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from orders_project.common.problems import DomainError
from payments import metrics
from payments.services import webhook_receive
from payments.signatures import WebhookMalformed, webhook_verify

EVENT_TYPES = ("payment.succeeded", "payment.failed", "refund.succeeded")


class WebhookTooLarge(DomainError):
    status = 413
    code = "payload_too_large"
    title = "Webhook body too large"


class RawBodyParser(BaseParser):
    """Leaves the body as bytes: the signature covers the raw bytes, not parsed JSON."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream.read() if stream else b""


def _read_limited_body(request) -> bytes:
    limit = settings.PAYMENT_WEBHOOK_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise WebhookTooLarge(f"Webhook bodies are limited to {limit} bytes.")
    body = request.body
    if len(body) > limit:
        raise WebhookTooLarge(f"Webhook bodies are limited to {limit} bytes.")
    return body


def _is_uuid(value) -> bool:
    try:
        UUID(str(value))
    except ValueError:
        return False
    return True


def _is_amount(value) -> bool:
    # A decimal string (or a JSON number): anything else would fail the amount comparison
    # later, inside the inbox transaction, as a 500 instead of a 400.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return False
    try:
        return Decimal(str(value)).is_finite()
    except InvalidOperation:
        return False


def _parse_event(body: bytes) -> dict:
    try:
        event = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise WebhookMalformed("The body is not JSON.") from exc
    data = event.get("data") if isinstance(event, dict) else None
    if (
        not isinstance(event, dict)
        or event.get("type") not in EVENT_TYPES
        or not isinstance(data, dict)
        or not _is_uuid(data.get("order_id"))
        or not isinstance(data.get("payment_id"), str)
        or not data["payment_id"]
        or len(data["payment_id"]) > 100
        or not _is_amount(data.get("amount"))
        or not isinstance(data.get("currency"), str)
    ):
        raise WebhookMalformed(
            "Expected {type: payment.succeeded|payment.failed|refund.succeeded, "
            "data: {payment_id, order_id (uuid), amount (decimal string), currency}}."
        )
    return event


@extend_schema(
    tags=["payments"],
    request={"application/json": {"type": "object"}},
    responses={
        200: OpenApiResponse(description="accepted (or a duplicate, acknowledged)"),
        400: OpenApiResponse(description="malformed"),
        401: OpenApiResponse(description="bad or missing signature, stale timestamp"),
        413: OpenApiResponse(description="body over 64 KiB"),
    },
)
class PaymentWebhookView(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []  # the provider retries; limiting it only delays money
    parser_classes = [RawBodyParser]

    def post(self, request):
        try:
            body = _read_limited_body(request)
            webhook_id = webhook_verify(
                headers=request.headers,
                body=body,
                secrets=settings.PAYMENT_WEBHOOK_SECRETS,
                tolerance_seconds=settings.PAYMENT_WEBHOOK_TOLERANCE,
            )
            event = _parse_event(body)
        except DomainError as error:
            metrics.WEBHOOKS.labels(outcome=f"rejected_{error.code}").inc()
            raise
        outcome = webhook_receive(webhook_id=webhook_id, event=event)
        return Response({"status": outcome.status, "detail": outcome.note})
