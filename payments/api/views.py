"""The provider's webhook endpoint (SPEC §5): verify on the raw body, then one service."""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from core.openapi import problem_responses
from core.problems import DomainError
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


# The canonical 8-4-4-4-12 form only (either case), as for product ids: UUID() would also
# take dash-less hex, braces and `urn:uuid:`, so one order would have many spellings.
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def _is_uuid(value) -> bool:
    return isinstance(value, str) and _CANONICAL_UUID.fullmatch(value) is not None


AMOUNT_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"


def _is_amount(value) -> bool:
    # A plain decimal string ("25.00") or a JSON number: anything else would fail the
    # amount comparison later, inside the inbox transaction, as a 500 instead of a 400.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return False
    if isinstance(value, str) and not re.fullmatch(AMOUNT_PATTERN, value, flags=re.ASCII):
        return False
    try:
        return Decimal(str(value)).is_finite()
    except InvalidOperation:
        return False


def _is_optional_str(container: dict, name: str) -> bool:
    return name not in container or isinstance(container[name], str)


def _is_storable(document) -> bool:
    """Whether PostgreSQL can store the parsed body as jsonb: JSON may escape NUL (\\u0000)
    and lone surrogates (\\ud800), which jsonb and UTF-8 cannot hold (a 500 otherwise)."""
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str):
            if "\x00" in value:
                return False
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def _parse_event(body: bytes) -> dict:
    try:
        event = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise WebhookMalformed("The body is not JSON.") from exc
    if not _is_storable(event):
        raise WebhookMalformed("The body contains NUL characters or unpaired surrogates.")
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
        or not _is_optional_str(data, "failure_reason")
        or not _is_optional_str(event, "created_at")
    ):
        raise WebhookMalformed(
            "Expected {type: payment.succeeded|payment.failed|refund.succeeded, "
            "data: {payment_id, order_id (uuid), amount (decimal string), currency}}."
        )
    return event


class StandardWebhooksSignature(BaseAuthentication):
    """Names the webhook's authentication in the schema. It authenticates nothing itself:
    the view verifies the signature on the raw body (see `webhook_verify`)."""

    def authenticate(self, request):
        return None


class StandardWebhooksSignatureScheme(OpenApiAuthenticationExtension):
    target_class = StandardWebhooksSignature
    name = "StandardWebhooks"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "webhook-signature",
            "description": (
                "Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256 of "
                '"{webhook-id}.{webhook-timestamp}.{raw body}">` (several, space-separated, '
                "during a secret rotation), with the `webhook-id` and `webhook-timestamp` "
                "(Unix seconds, within 300 s of now) headers."
            ),
        }


@extend_schema_field(
    {
        "oneOf": [{"type": "string", "pattern": AMOUNT_PATTERN}, {"type": "number"}],
        "example": "25.00",
    }
)
class WebhookAmountField(serializers.Field):
    pass


@extend_schema_field(
    {"type": "string", "format": "uuid", "pattern": f"^{_CANONICAL_UUID.pattern}$"}
)
class WebhookOrderIdField(serializers.Field):
    pass


class WebhookEventDataSerializer(serializers.Serializer):
    payment_id = serializers.CharField(max_length=100)
    order_id = WebhookOrderIdField(help_text="The order's id, in the canonical 8-4-4-4-12 form.")
    amount = WebhookAmountField(help_text="Decimal string; a JSON number is accepted too.")
    currency = serializers.CharField(allow_blank=True)
    failure_reason = serializers.CharField(required=False, allow_blank=True)


class WebhookEventSerializer(serializers.Serializer):
    """Documents the provider's body; the view parses the raw bytes itself."""

    type = serializers.ChoiceField(choices=EVENT_TYPES)
    # The metaclass moves declared fields into _declared_fields: `.data` stays DRF's
    # property at runtime, which mypy cannot see.
    data = WebhookEventDataSerializer()  # type: ignore[assignment]
    created_at = serializers.CharField(required=False, allow_blank=True, help_text="ISO 8601.")


class WebhookAcceptedSerializer(serializers.Serializer):
    status = serializers.CharField(
        help_text="applied, ignored, mismatch, waiting, unmatched or duplicate."
    )
    detail = serializers.CharField(allow_blank=True)


@extend_schema(
    tags=["payments"],
    request={"application/json": WebhookEventSerializer},
    responses={200: WebhookAcceptedSerializer, **problem_responses(400, 401, 413)},
    description=(
        "200 also for a redelivery (acknowledged, changes nothing); 400 `webhook_malformed`; "
        "401 `webhook_signature_invalid` (missing, bad or stale); 413 `payload_too_large`."
    ),
)
class PaymentWebhookView(APIView):
    authentication_classes = [StandardWebhooksSignature]
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
