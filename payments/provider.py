"""HTTP client of the payment provider. Raises ProviderUnavailable for anything technical
(timeouts, refused connections, 5xx), which the saga retries; never called in a transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import requests
from django.conf import settings
from django.db import connection

from payments.errors import ProviderRejected, ProviderUnavailable


@dataclass(frozen=True)
class ProviderPayment:
    id: str
    status: str


_session = requests.Session()


def _call(method: str, path: str, *, json: dict | None = None, headers: dict | None = None):
    # A provider call inside a transaction would hold row locks for a network round trip.
    if connection.in_atomic_block:
        raise RuntimeError("the payment provider must not be called inside a transaction")
    try:
        response = _session.request(
            method,
            settings.PAYMENT_PROVIDER_URL.rstrip("/") + path,
            json=json,
            headers=headers,
            timeout=settings.PAYMENT_PROVIDER_TIMEOUT,
        )
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code >= 500 or response.status_code == 429:
        raise ProviderUnavailable(f"provider answered {response.status_code}")
    try:
        body = response.json()
    except ValueError as exc:
        raise ProviderUnavailable("provider answered with a body that is not JSON") from exc
    if response.status_code >= 400:
        raise ProviderRejected(response.status_code, body)
    return body


def provider_create_payment(
    *, idempotency_key: str, order_id: str, amount: Decimal, currency: str, email: str
) -> ProviderPayment:
    body = _call(
        "POST",
        "/v1/payments",
        json={"order_id": order_id, "amount": str(amount), "currency": currency, "email": email},
        headers={"Idempotency-Key": idempotency_key},
    )
    return ProviderPayment(id=body["id"], status=body["status"])


def provider_cancel_payment(*, provider_payment_id: str) -> ProviderPayment:
    body = _call("POST", f"/v1/payments/{provider_payment_id}/cancel")
    return ProviderPayment(id=body["id"], status=body["status"])


def provider_refund_payment(*, provider_payment_id: str) -> ProviderPayment:
    body = _call("POST", f"/v1/payments/{provider_payment_id}/refund")
    return ProviderPayment(id=body["id"], status=body["status"])
