"""Helpers for the payment saga tests: an HTTP API consumer, signed webhooks, the event
stream read back, and polling with deadlines."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

import redis
import requests
from django.db.models import Sum

from catalog.models import Product
from orders.models import Order, OrderItem, OrderStatus
from payments.signatures import webhook_sign
from tests import polling
from tests.event_contract import check_stream_entries

# The secret the stack's web process verifies and its fake provider signs with.
WEBHOOK_SECRET = "whsec_cGF5bWVudHMtdGVzdHMtY3VycmVudC1zZWNyZXQtMA=="
# A second one, for rotation tests (the "old" secret still accepted for a while).
OLD_WEBHOOK_SECRET = "whsec_cGF5bWVudHMtdGVzdHMtcHJldmlvdXMtc2VjcmV0LTE="
WEBHOOK_PATH = "/api/v1/payments/webhook/"
# The fake provider's bearer token (its reads and /_chaos), fresh for each test session.
PROVIDER_TOKEN = secrets.token_urlsafe(24)


def provider_auth(token: str = PROVIDER_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unique_email(tag: str = "buyer", *, decline: bool = False) -> str:
    local = f"{tag}-{uuid.uuid4().hex[:10]}"
    return f"{local}{'+decline' if decline else ''}@example.com"


@dataclass
class Shop:
    """An API consumer talking HTTP to the web process (X-API-Key, Idempotency-Key)."""

    base_url: str
    api_key: str

    def __post_init__(self) -> None:
        self.session = requests.Session()
        self.session.headers["X-API-Key"] = self.api_key

    def place(self, *, email: str, lines: Iterable[tuple[Product, int]]) -> requests.Response:
        body = {
            "email": email,
            "items": [{"product_id": str(p.pk), "quantity": q} for p, q in lines],
        }
        return self.session.post(
            f"{self.base_url}/api/v1/orders/",
            json=body,
            headers={"Idempotency-Key": uuid.uuid4().hex},
            timeout=30,
        )

    def place_ok(self, *, email: str, lines: Iterable[tuple[Product, int]]) -> dict:
        response = self.place(email=email, lines=lines)
        assert response.status_code == 201, response.text
        return response.json()

    def get(self, order_id) -> dict:
        response = self.session.get(f"{self.base_url}/api/v1/orders/{order_id}/", timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def cancel(self, order_id) -> requests.Response:
        return self.session.post(f"{self.base_url}/api/v1/orders/{order_id}/cancel/", timeout=30)


# The saga moves through HTTP, Celery and the provider: every 0.2 s is often enough.
eventually = partial(polling.eventually, interval=0.2)


def order_status(order_id) -> tuple[str, str]:
    order = Order.objects.get(pk=order_id)
    return order.status, order.cancel_reason


# --- webhooks ---------------------------------------------------------------------------


def webhook_event(
    event_type: str,
    *,
    order: Order,
    payment_id: str = "pay_test",
    amount: Any = None,
    currency: str | None = None,
) -> dict:
    data = {
        "payment_id": payment_id,
        "order_id": str(order.pk),
        "amount": str(order.total) if amount is None else amount,
        "currency": currency or order.currency,
    }
    if event_type == "payment.failed":
        data["failure_reason"] = "card_declined"
    return {"type": event_type, "data": data, "created_at": "2025-01-01T00:00:00+00:00"}


def signed_headers(
    body: bytes,
    *,
    secret: str = WEBHOOK_SECRET,
    webhook_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhook_sign(
            secret=secret, webhook_id=webhook_id, timestamp=timestamp, body=body
        ),
    }


def as_django_headers(headers: dict[str, str]) -> dict[str, str]:
    """{"webhook-id": ...} as the Django test client's extra META keys."""
    return {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}


# --- the event stream -------------------------------------------------------------------


def stream_events(redis_url: str, stream: str) -> list[dict]:
    """Every entry of the stream, oldest first, with the payload parsed; each one checked
    against the event contract first."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        entries = client.xrange(stream, "-", "+")
    finally:
        client.close()
    check_stream_entries(
        ({"_entry_id": entry_id, **fields} for entry_id, fields in entries), where=stream
    )
    events = []
    for _, fields in entries:
        fields = dict(fields)
        fields["payload"] = json.loads(fields["payload"])
        fields["version"] = int(fields["version"])
        events.append(fields)
    return events


def events_by_aggregate(events: Iterable[dict]) -> dict[str, list[tuple[str, int]]]:
    """{aggregate_id: [(type, version), ...]} in stream order."""
    seen: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for event in events:
        seen[event["aggregate_id"]].append((event["type"], event["version"]))
    return seen


# --- stock ------------------------------------------------------------------------------


def reserved_by_live_orders(product: Product) -> int:
    """Σ quantity of the product's items in orders that are not cancelled."""
    total = (
        OrderItem.objects.filter(product=product)
        .exclude(order__status=OrderStatus.CANCELLED)
        .aggregate(n=Sum("quantity"))["n"]
    )
    return int(total or 0)


def money(value: str | Decimal) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))
