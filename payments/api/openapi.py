"""How the provider's webhook documents itself (SPEC §5): summary, description, examples and
the problems it answers, applied to the view in views.py."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, extend_schema

from core.openapi import documented, every_request, problem_responses
from payments.api.serializers import (
    MALFORMED_BODY,
    WebhookAcceptedSerializer,
    WebhookEventSerializer,
)
from payments.errors import WebhookMalformed, WebhookSignatureInvalid, WebhookTooLarge

_DATA = {
    "payment_id": "pay_8f14e45fceea167a",
    "order_id": "0b6c4d1e-2f3a-4b5c-8d9e-0f1a2b3c4d5e",
    "amount": "31.50",
    "currency": "USD",
}
SUCCEEDED = {"type": "payment.succeeded", "data": _DATA, "created_at": "2026-03-02T10:15:02Z"}
FAILED = {
    "type": "payment.failed",
    "data": {**_DATA, "failure_reason": "card_declined"},
    "created_at": "2026-03-02T10:15:02Z",
}
_MAX_BYTES = settings.PAYMENT_WEBHOOK_MAX_BYTES

PAYMENTS_WEBHOOK = extend_schema(
    operation_id="payments_webhook",
    tags=["payments"],
    summary="Receive a payment provider event",
    description=(
        "The payment provider's callback: a payment succeeded or failed, or a refund "
        "succeeded. Signed the Standard Webhooks way (`webhook-id`, `webhook-timestamp`, "
        "`webhook-signature`: see the StandardWebhooks security scheme) over the raw body, "
        f"which is at most {_MAX_BYTES} bytes.\n\n"
        "Each `webhook-id` is applied once: a redelivery, even concurrent or days later, is "
        "acknowledged (`200`, `duplicate`) and changes nothing. An event for an order that "
        "is not visible yet is kept and retried (`waiting`); an amount, currency or payment "
        "id that does not match the order is recorded, not applied (`mismatch`); a state "
        "never moves backwards (`ignored`). Only `2xx` means the event is recorded: the "
        "provider retries anything else. Not rate-limited."
    ),
    request={"application/json": WebhookEventSerializer},
    responses={
        200: WebhookAcceptedSerializer,
        **problem_responses(
            documented(WebhookMalformed(MALFORMED_BODY), summary="Headers or body malformed."),
            documented(
                WebhookSignatureInvalid("No signature matches a configured secret."),
                summary="The signature is missing, wrong, or its timestamp is over 300 s off.",
            ),
            documented(
                WebhookTooLarge(f"Webhook bodies are limited to {_MAX_BYTES} bytes."),
                summary="A body over PAYMENT_WEBHOOK_MAX_BYTES.",
            ),
            *every_request(),
        ),
    },
    examples=[
        OpenApiExample("A payment succeeded", value=SUCCEEDED, request_only=True),
        OpenApiExample("A payment failed", value=FAILED, request_only=True),
        OpenApiExample("Applied", value={"status": "applied", "detail": ""}, response_only=True),
        OpenApiExample(
            "A redelivery", value={"status": "duplicate", "detail": ""}, response_only=True
        ),
    ],
)
