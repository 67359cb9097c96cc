"""The provider's webhook endpoint (SPEC §5): verify on the raw body, then one service."""

from __future__ import annotations

import json

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


def _parse_event(body: bytes) -> dict:
    try:
        event = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WebhookMalformed("The body is not JSON.") from exc
    if (
        not isinstance(event, dict)
        or event.get("type") not in EVENT_TYPES
        or not isinstance(event.get("data"), dict)
        or not event["data"].get("order_id")
        or "amount" not in event["data"]
    ):
        raise WebhookMalformed(
            "Expected {type: payment.succeeded|payment.failed|refund.succeeded, "
            "data: {payment_id, order_id, amount, currency}}."
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
