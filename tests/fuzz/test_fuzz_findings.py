"""What the schemathesis run found, pinned as plain examples (SPEC §3, §5).

- A signed webhook whose JSON escapes NUL (\\u0000) or an unpaired surrogate anywhere,
  even in a field the service ignores, was a 500 (PostgreSQL's jsonb cannot store
  either): it is a 400 webhook_malformed now.
- The webhook accepted amounts such as "1e5" or " 25", and non-string failure_reason /
  created_at; it takes what the schema documents: a plain decimal string or a JSON number.
- The schema documented the order list as a bare array (it is a cursor page), no 401/429
  on order endpoints, no minItems/maxItems on `items`, no page_size bounds, no webhook
  body: it says all of these now.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from django.conf import settings
from django.test import Client

from payments.signatures import webhook_sign

pytestmark = pytest.mark.django_db

WEBHOOK = "/api/v1/payments/webhook/"


def _post_signed(body: bytes):
    webhook_id = f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    signature = webhook_sign(
        secret=settings.PAYMENT_WEBHOOK_SECRETS[0],
        webhook_id=webhook_id,
        timestamp=timestamp,
        body=body,
    )
    return Client(raise_request_exception=False).post(
        WEBHOOK,
        body,
        content_type="application/json",
        headers={
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        },
    )


def _event(**data_overrides) -> dict:
    data = {
        "payment_id": "pay_1",
        "order_id": str(uuid.uuid4()),
        "amount": "25.00",
        "currency": "USD",
    }
    data.update(data_overrides)
    return {"type": "payment.succeeded", "data": data, "created_at": "2026-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    "raw",
    [
        # NUL in a value, in a key the service ignores, and an unpaired surrogate.
        json.dumps(_event(payment_id="pay_\u0000")),
        json.dumps({**_event(), "extra": {"k\u0000": 1}}),
        json.dumps({**_event(), "note": "\ud800"}),
    ],
    ids=["nul-in-value", "nul-in-ignored-key", "lone-surrogate"],
)
def test_webhook_with_text_postgresql_cannot_store_is_malformed_not_a_500(raw):
    response = _post_signed(raw.encode())
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert response.json()["code"] == "webhook_malformed"


@pytest.mark.parametrize(
    "overrides",
    [{"amount": "1e5"}, {"amount": " 25.00"}, {"amount": "NaN"}, {"failure_reason": 5}],
)
def test_webhook_refuses_what_its_schema_does_not_allow(overrides):
    response = _post_signed(json.dumps(_event(**overrides)).encode())
    assert response.status_code == 400
    assert response.json()["code"] == "webhook_malformed"


@pytest.mark.parametrize("amount", ["25.00", 25, 25.0])
def test_webhook_takes_a_decimal_string_or_a_json_number(amount):
    # An unknown order: recorded and kept waiting for the order to appear.
    response = _post_signed(json.dumps(_event(amount=amount)).encode())
    assert response.status_code == 200
    assert response.json()["status"] == "waiting"


def test_empty_filters_on_the_order_list_mean_no_filter(authed_api):
    response = authed_api.get("/api/v1/orders/?status=&email=")
    assert response.status_code == 200
    assert response.json() == {"next": None, "previous": None, "results": []}


def test_schema_documents_what_the_fuzzer_relies_on():
    body = Client().get("/api/schema/", {"format": "json"}).json()
    paths, schemas = body["paths"], body["components"]["schemas"]
    listing = paths["/api/v1/orders/"]["get"]["responses"]["200"]["content"]
    page = schemas[listing["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert {"next", "previous", "results"} <= page["properties"].keys()
    items = schemas["OrderCreateRequest"]["properties"]["items"]
    assert (items["minItems"], items["maxItems"]) == (1, 50)
    for path, operations in paths.items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], (
                        method,
                        path,
                        status,
                    )
            if path.startswith("/api/v1/orders/"):
                assert {"401", "429"} <= operation["responses"].keys(), (method, path)
    page_size = next(
        p for p in paths["/api/v1/products/"]["get"]["parameters"] if p["name"] == "page_size"
    )
    assert (page_size["schema"]["minimum"], page_size["schema"]["maximum"]) == (1, 100)
    webhook = paths[WEBHOOK]["post"]
    assert webhook["security"] == [{"StandardWebhooks": []}]
    assert "application/json" in webhook["requestBody"]["content"]
