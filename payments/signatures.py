"""Standard Webhooks verification (https://www.standardwebhooks.com/), on the raw body.

`webhook-signature` holds one or more space-separated `v1,<base64 HMAC-SHA256>` of
"{webhook-id}.{webhook-timestamp}.{raw body}"; any configured secret may match (rotation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence

from payments.errors import WebhookMalformed, WebhookSignatureInvalid

_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def _secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def webhook_sign(*, secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_verify(
    *,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    tolerance_seconds: int,
    now: float | None = None,
) -> str:
    """Return the webhook id if the request is authentic and fresh; raise otherwise."""
    webhook_id = headers.get("webhook-id")
    timestamp_raw = headers.get("webhook-timestamp")
    signature_header = headers.get("webhook-signature")
    if not signature_header:
        raise WebhookSignatureInvalid("The webhook-signature header is missing.")
    if not webhook_id or not timestamp_raw:
        raise WebhookMalformed("The webhook-id and webhook-timestamp headers are required.")
    if len(webhook_id) > 255:
        raise WebhookMalformed("webhook-id is longer than 255 characters.")
    # ASCII digits only, and few of them: int() would take a sign, spaces, underscores and
    # Unicode digits, and 400 digits overflow the float comparison below (a 500 before
    # the signature was even checked). Twelve digits reach past the year 33000.
    if not _TIMESTAMP.fullmatch(timestamp_raw):
        raise WebhookMalformed("webhook-timestamp must be whole seconds since the epoch.")
    timestamp = int(timestamp_raw)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise WebhookSignatureInvalid(
            f"webhook-timestamp is more than {tolerance_seconds} s away from now."
        )
    offered = []
    for part in signature_header.split(" "):
        version, _, value = part.partition(",")
        if version != "v1" or not value:
            continue
        try:
            offered.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    signed = f"{webhook_id}.{timestamp_raw}.".encode() + body
    for secret in secrets:
        expected = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
        # compare_digest against every candidate: no early exit that timing could reveal.
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return webhook_id
    raise WebhookSignatureInvalid("No signature matches a configured secret.")
