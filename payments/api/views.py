"""The provider's webhook endpoint (SPEC §5): verify on the raw body, parse, one service."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from core.problems import DomainError
from payments import metrics
from payments.api import openapi
from payments.api.serializers import webhook_event_parse
from payments.errors import WebhookTooLarge
from payments.signatures import webhook_verify
from payments.webhooks import webhook_receive


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


class PaymentWebhookView(APIView):
    authentication_classes = [StandardWebhooksSignature]
    permission_classes: list = []
    throttle_classes: list = []  # the provider retries; limiting it only delays money
    parser_classes = [RawBodyParser]

    @openapi.PAYMENTS_WEBHOOK
    def post(self, request):
        try:
            body = _read_limited_body(request)
            webhook_id = webhook_verify(
                headers=request.headers,
                body=body,
                secrets=settings.PAYMENT_WEBHOOK_SECRETS,
                tolerance_seconds=settings.PAYMENT_WEBHOOK_TOLERANCE,
            )
            event = webhook_event_parse(body)
        except DomainError as error:
            metrics.WEBHOOKS.labels(outcome=f"rejected_{error.code}").inc()
            raise
        outcome = webhook_receive(webhook_id=webhook_id, event=event)
        return Response({"status": outcome.status, "detail": outcome.note})
