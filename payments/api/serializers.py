"""The provider's webhook body (SPEC §5), described once: the serializer that parses it is
the one the schema shows.

The view verifies the signature on the raw bytes first; `webhook_event_parse` then decodes
the JSON and validates it here. The inbox keeps the document as the provider sent it (the
serializer only decides whether it is acceptable): what is stored is what was signed.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from payments.errors import WebhookMalformed
from payments.webhooks import OUTCOMES

EVENT_TYPES = ("payment.succeeded", "payment.failed", "refund.succeeded")

AMOUNT_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"

# The canonical 8-4-4-4-12 form only (either case), as for product ids: UUID() would also
# take dash-less hex, braces and `urn:uuid:`, so one order would have many spellings.
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")

MALFORMED_BODY = (
    "Expected {type: payment.succeeded|payment.failed|refund.succeeded, "
    "data: {payment_id, order_id (uuid), amount (decimal string), currency}}."
)


class StrictCharField(serializers.CharField):
    """A JSON string as sent: no number turned into text, no whitespace trimmed (the
    values are compared with the order's and stored as they are)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return data


class StrictChoiceField(serializers.ChoiceField):
    """A choice given as a JSON string: DRF's own would first turn any value into text
    (a deeply nested list could then exhaust the stack: a 500, not a 400)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid_choice", input="")
        return super().to_internal_value(data)


@extend_schema_field(
    {
        "oneOf": [{"type": "string", "pattern": AMOUNT_PATTERN}, {"type": "number"}],
        "example": "25.00",
    }
)
class WebhookAmountField(serializers.Field):
    """A plain decimal string ("25.00") or a JSON number: anything else would fail the
    amount comparison later, inside the inbox transaction, as a 500 instead of a 400."""

    default_error_messages = {"invalid": "A decimal string or a JSON number is required."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, str | int | float):
            self.fail("invalid")
        if isinstance(data, str) and not re.fullmatch(AMOUNT_PATTERN, data, flags=re.ASCII):
            self.fail("invalid")
        try:
            finite = Decimal(str(data)).is_finite()
        except InvalidOperation:
            finite = False
        if not finite:
            self.fail("invalid")
        return data


@extend_schema_field(
    {"type": "string", "format": "uuid", "pattern": f"^{_CANONICAL_UUID.pattern}$"}
)
class WebhookOrderIdField(serializers.Field):
    default_error_messages = {"invalid": "A UUID in its canonical 8-4-4-4-12 form is required."}

    def to_internal_value(self, data):
        if not isinstance(data, str) or _CANONICAL_UUID.fullmatch(data) is None:
            self.fail("invalid")
        return data


class WebhookEventDataSerializer(serializers.Serializer):
    payment_id = StrictCharField(max_length=100, help_text="The provider's id for the payment.")
    order_id = WebhookOrderIdField(help_text="The order's id, in the canonical 8-4-4-4-12 form.")
    amount = WebhookAmountField(help_text="Decimal string; a JSON number is accepted too.")
    currency = StrictCharField(allow_blank=True, help_text="ISO 4217, e.g. USD.")
    failure_reason = StrictCharField(
        required=False, allow_blank=True, help_text="Why a payment failed, for people."
    )

    class Meta:
        ref_name = "WebhookEventData"


class WebhookEventSerializer(serializers.Serializer):
    """The provider's webhook body, exactly as the endpoint parses it."""

    type = StrictChoiceField(choices=EVENT_TYPES)
    # The metaclass moves declared fields into _declared_fields: `.data` stays DRF's
    # property at runtime, which mypy cannot see.
    data = WebhookEventDataSerializer()  # type: ignore[assignment]
    created_at = StrictCharField(required=False, allow_blank=True, help_text="ISO 8601.")

    class Meta:
        ref_name = "WebhookEvent"


class WebhookAcceptedSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=OUTCOMES,
        read_only=True,
        help_text="What became of the event (any 2xx means it is recorded).",
    )
    detail = serializers.CharField(read_only=True, help_text="A note for people; may be empty.")


def webhook_event_parse(body: bytes) -> dict:
    """The webhook's event, as sent; raises WebhookMalformed (400) for anything else."""
    try:
        event = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise WebhookMalformed("The body is not JSON.") from exc
    if not _is_storable(event):
        raise WebhookMalformed("The body contains NUL characters or unpaired surrogates.")
    if not WebhookEventSerializer(data=event).is_valid():
        raise WebhookMalformed(MALFORMED_BODY)
    return event


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
