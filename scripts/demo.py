"""`make demo`: walk the whole API of a running service (`make run`) in about a minute.

    make demo                                    # against http://127.0.0.1:8000
    make demo DEMO_BASE_URL=http://127.0.0.1:8001
    .venv/bin/python -m scripts.demo --help

Each step prints the requests it sends (method, path, the headers that matter) and a short
summary of each response, and checks the answer against the contract (docs: SPEC §3-§5):
products listed; an order created with an Idempotency-Key, replayed byte for byte, its key
reused with another body (409); more than the stock ordered (409, nothing reserved); an
order cancelled and its stock back; a normal order paid and a `+decline` order cancelled by
the payment saga (the fake provider); a signed webhook sent by hand and its redelivery; the
event stream's entries of one order. The first difference from the contract stops the demo
with exit code 1 (2 when the service cannot be reached or set up).

The API key: --api-key / DEMO_API_KEY, else a fresh API client is created with
`manage.py create_api_client` (same DATABASE_URL as the service). The webhook secret and the
stream are the service's defaults unless PAYMENT_WEBHOOK_SECRETS / EVENT_STREAM /
EVENT_STREAM_REDIS_URL / REDIS_URL say otherwise, as for `make run`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis
import requests

from scripts.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
# The defaults of orders_project/settings.py (the local development secret of `make run`).
DEFAULT_WEBHOOK_SECRET = "whsec_ZGV2LW9ubHktd2ViaG9vay1zZWNyZXQtY2hhbmdlLW1l"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_STREAM = "orders.events"
STEPS = [
    "list products",
    "create an order",
    "replay it",
    "reuse the key with another body",
    "order more than the stock",
    "cancel an order",
    "a normal order becomes paid",
    "a +decline order becomes cancelled",
    "a signed webhook by hand",
    "the event stream of one order",
]
# Headers worth showing when present (requests' header lookup ignores case).
SHOWN_HEADERS = (
    "Location",
    "Idempotent-Replayed",
    "Retry-After",
    "RateLimit-Remaining",
)


class DemoFailure(Exception):
    """The service answered something the contract does not allow."""


class SetupError(Exception):
    """The demo could not start: no service, no API key."""


def check(condition: object, message: str) -> None:
    if not condition:
        raise DemoFailure(message)


def sign_webhook(*, secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{raw body}">, keyed
    with the base64 part of a `whsec_` secret (payments/signatures.py verifies it)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def summarize(response: requests.Response) -> str:
    """One line about a response body: an order, a page, a problem or a small object."""
    try:
        data = response.json()
    except ValueError:
        return f"{len(response.content)} bytes"
    if isinstance(data, dict) and "code" in data and "status" in data:
        return f"problem {data['code']}: {str(data.get('detail', ''))[:100]}"
    if isinstance(data, dict) and "results" in data:
        items = data["results"]
        shown = ", ".join(f"{p.get('sku')} ({p.get('stock')} in stock)" for p in items[:3])
        more = f", ... ({len(items)} on this page)" if len(items) > 3 else ""
        return f"{shown}{more}"
    if isinstance(data, dict) and "items" in data and "total" in data:
        reason = f" ({data['cancel_reason']})" if data.get("cancel_reason") else ""
        payment = data.get("payment") or {}
        paid = f", payment {payment.get('status')}" if payment else ""
        return (
            f"order {str(data['id'])[:8]}… {data['status']}{reason}, "
            f"{data['total']} {data['currency']}{paid}"
        )
    if isinstance(data, dict) and "sku" in data:
        return f"product {data['sku']}: {data['stock']} in stock"
    return json.dumps(data)[:120]


class Demo:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        redis_url: str,
        stream: str,
        webhook_secret: str,
        timeout: float,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.stream = stream
        self.webhook_secret = webhook_secret
        self.timeout = timeout
        self.http = requests.Session()
        self.run_tag = uuid.uuid4().hex[:8]

    # ------------------------------------------------------------------ printing, HTTP

    def request(
        self,
        method: str,
        path: str,
        *,
        key: bool = True,
        headers: dict[str, str] | None = None,
        body: dict | None = None,
        raw: bytes | None = None,
        quiet: bool = False,
    ) -> requests.Response:
        sent = dict(headers or {})
        if key:
            sent["X-API-Key"] = self.api_key
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            sent["Content-Type"] = "application/json"
        response = self.http.request(
            method, self.base_url + path, headers=sent, data=data, timeout=30
        )
        if not quiet:
            shown = "  ".join(
                f"{name}: {'…' + value[-4:] if name == 'X-API-Key' else value}"
                for name, value in sent.items()
                if name != "Content-Type"
            )
            print(f"  > {method} {path}  {shown}".rstrip())
            if body is not None:
                print(f"    {json.dumps(body)[:160]}")
            got = "  ".join(
                f"{name}: {response.headers[name]}"
                for name in SHOWN_HEADERS
                if name in response.headers
            )
            print(f"  < {response.status_code} {response.reason}  {got}".rstrip())
            print(f"    {summarize(response)}")
        return response

    def expect(self, response: requests.Response, status: int, code: str | None = None) -> dict:
        check(
            response.status_code == status,
            f"expected {status}, got {response.status_code}: {response.text[:300]}",
        )
        data = response.json()
        if code is not None:
            content_type = response.headers.get("Content-Type", "")
            check(
                content_type.startswith("application/problem+json"),
                f"an error must be application/problem+json, got {content_type!r}",
            )
            check(data.get("code") == code, f"expected code {code!r}, got {data.get('code')!r}")
        return data

    def wait(self, predicate: Callable[[], Any], *, what: str, timeout: float | None = None) -> Any:
        """Poll with a deadline that grows on a slow machine (scripts/waiting.py)."""
        return wait_for(
            predicate, what=what, timeout=timeout or self.timeout, interval=0.5, error=DemoFailure
        )

    # ------------------------------------------------------------------ helpers

    def email(self, tag: str, *, decline: bool = False) -> str:
        # A fresh address per order: order creation is rate limited per (client, email).
        return f"demo-{tag}-{self.run_tag}{'+decline' if decline else ''}@example.com"

    def stock(self, product_id: str) -> int:
        response = self.request("GET", f"/api/v1/products/{product_id}/", key=False)
        return int(self.expect(response, 200)["stock"])

    def create(self, body: dict, *, idempotency_key: str | None = None) -> requests.Response:
        key = idempotency_key or f"demo-{uuid.uuid4()}"
        return self.request("POST", "/api/v1/orders/", headers={"Idempotency-Key": key}, body=body)

    def order(self, order_id: str, *, quiet: bool = False) -> dict:
        response = self.request("GET", f"/api/v1/orders/{order_id}/", quiet=quiet)
        return self.expect(response, 200)

    def settled(self, order_id: str) -> dict:
        """Poll the order until the payment saga moved it out of pending_payment."""

        def moved() -> dict | None:
            order = self.order(order_id, quiet=True)
            return order if order["status"] != "pending_payment" else None

        print(f"    (polling GET /api/v1/orders/{order_id}/ until it leaves pending_payment)")
        self.wait(moved, what=f"order {order_id} paid or cancelled by the payment saga")
        return self.order(order_id)

    # ------------------------------------------------------------------ the walk

    def run(self) -> None:
        try:
            self.redis.ping()
            # Stream entries from now on: their ids begin with Redis's clock in ms.
            seconds, micros = self.redis.time()
            self.stream_start = f"{int(seconds) * 1000 + int(micros) // 1000 - 1000}-0"
        except redis.RedisError as exc:
            raise SetupError(f"Redis (event stream) not reachable: {exc}") from exc
        steps = [
            self.step_products,
            self.step_create,
            self.step_replay,
            self.step_key_reused,
            self.step_insufficient_stock,
            self.step_cancel,
            self.step_paid,
            self.step_declined,
            self.step_webhook,
            self.step_events,
        ]
        started = time.monotonic()
        for number, (title, step) in enumerate(zip(STEPS, steps, strict=True), start=1):
            print(f"\n[{number}/{len(STEPS)}] {title}")
            try:
                step()
            except DemoFailure as exc:
                raise DemoFailure(f"step {number} ({title}): {exc}") from exc
            print(f"  ok: {title}")
        print(f"\ndemo passed: {len(STEPS)} steps in {time.monotonic() - started:.1f}s")

    def step_products(self) -> None:
        data = self.expect(self.request("GET", "/api/v1/products/?page_size=100", key=False), 200)
        check(
            {"next", "previous", "results"} <= set(data), "a cursor page has next/previous/results"
        )
        products = data["results"]
        check(products, "no active products: load some (make run seeds the demo catalog)")
        # Orders of this demo: a product with a few units; over the stock: one with < 1000.
        stocked = [p for p in products if p["stock"] >= 4]
        check(stocked, "no product with 4 units or more in stock")
        self.product = max(stocked, key=lambda p: p["stock"])
        capped = [p for p in products if p["stock"] < 1000]
        check(capped, "no product with fewer than 1000 units (the largest order allowed)")
        self.scarce = min(capped, key=lambda p: p["stock"])
        for field in ("id", "sku", "name", "price", "currency", "stock", "is_active"):
            check(field in self.product, f"a product has {field!r}")
        print(f"    using {self.product['sku']} for orders, {self.scarce['sku']} to overdraw")

    def step_create(self) -> None:
        self.stock_before = int(self.product["stock"])
        self.body = {
            "email": self.email("cancel"),
            "items": [{"product_id": self.product["id"], "quantity": 2}],
        }
        self.key = f"demo-{uuid.uuid4()}"
        self.first = self.create(self.body, idempotency_key=self.key)
        order = self.expect(self.first, 201)
        check(order["status"] == "pending_payment", f"a new order is pending_payment: {order}")
        check(
            Decimal(order["total"]) == Decimal(self.product["price"]) * 2,
            f"total {order['total']} = 2 x {self.product['price']}",
        )
        check(
            self.first.headers.get("Location", "").endswith(f"/api/v1/orders/{order['id']}/"),
            f"Location names the order: {self.first.headers.get('Location')}",
        )
        check(
            self.first.headers.get("Idempotent-Replayed") == "false",
            "a first response says Idempotent-Replayed: false",
        )
        self.created = order

    def step_replay(self) -> None:
        replay = self.create(self.body, idempotency_key=self.key)
        check(replay.status_code == 201, f"a replay answers 201, got {replay.status_code}")
        check(replay.headers.get("Idempotent-Replayed") == "true", "Idempotent-Replayed: true")
        check(replay.content == self.first.content, "a replay repeats the same body bytes")
        check(
            replay.headers.get("Location") == self.first.headers.get("Location"),
            "a replay repeats the Location",
        )
        stock = self.stock(self.product["id"])
        check(
            stock == self.stock_before - 2,
            f"stock reserved once: {self.stock_before} - 2, got {stock}",
        )

    def step_key_reused(self) -> None:
        other = {**self.body, "items": [{"product_id": self.product["id"], "quantity": 1}]}
        self.expect(self.create(other, idempotency_key=self.key), 409, "idempotency_key_reused")

    def step_insufficient_stock(self) -> None:
        scarce = self.scarce
        before = self.stock(scarce["id"])
        wanted = min(1000, before + 1)
        body = {
            "email": self.email("overdraw"),
            "items": [{"product_id": scarce["id"], "quantity": wanted}],
        }
        problem = self.expect(self.create(body), 409, "insufficient_stock")
        check(scarce["id"] in json.dumps(problem), "the problem names the short product")
        check(self.stock(scarce["id"]) == before, "nothing reserved")

    def step_cancel(self) -> None:
        order_id = self.created["id"]
        response = self.request("POST", f"/api/v1/orders/{order_id}/cancel/")
        order = self.expect(response, 200)
        check(
            (order["status"], order["cancel_reason"]) == ("cancelled", "customer_requested"),
            f"cancelled (customer_requested): {order['status']} {order['cancel_reason']}",
        )
        again = self.expect(self.request("POST", f"/api/v1/orders/{order_id}/cancel/"), 200)
        check(again["status"] == "cancelled", "cancelling again answers 200 with the order")
        stock = self.stock(self.product["id"])
        check(stock == self.stock_before, f"stock back to {self.stock_before}, got {stock}")

    def step_paid(self) -> None:
        body = {
            "email": self.email("paid"),
            "items": [{"product_id": self.product["id"], "quantity": 1}],
        }
        created = self.expect(self.create(body), 201)
        order = self.settled(created["id"])
        check(order["status"] == "paid", f"paid, got {order['status']} {order['cancel_reason']}")
        check(order["paid_at"], "paid_at is set")
        payment = order.get("payment") or {}
        check(payment.get("status") == "succeeded", f"payment succeeded: {payment}")
        self.paid = order

    def step_declined(self) -> None:
        before = self.stock(self.product["id"])
        body = {
            "email": self.email("declined", decline=True),
            "items": [{"product_id": self.product["id"], "quantity": 1}],
        }
        created = self.expect(self.create(body), 201)
        order = self.settled(created["id"])
        check(
            (order["status"], order["cancel_reason"]) == ("cancelled", "payment_failed"),
            f"cancelled (payment_failed), got {order['status']} {order['cancel_reason']}",
        )
        stock = self.stock(self.product["id"])
        check(stock == before, f"the declined order's unit is back: {before}, got {stock}")

    def step_webhook(self) -> None:
        # A success for the order the provider already paid: recorded, changes nothing
        # (states never move backwards); the same webhook-id again is a redelivery: 2xx.
        order = self.paid
        event = {
            "type": "payment.succeeded",
            "data": {
                "payment_id": order["payment"]["provider_payment_id"],
                "order_id": order["id"],
                "amount": order["total"],
                "currency": order["currency"],
            },
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        raw = json.dumps(event).encode()
        webhook_id = f"msg_demo_{uuid.uuid4().hex}"
        timestamp = int(time.time())
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_webhook(
                secret=self.webhook_secret, webhook_id=webhook_id, timestamp=timestamp, body=raw
            ),
        }
        path = "/api/v1/payments/webhook/"
        print(f"    {json.dumps(event)[:160]}")
        first = self.expect(self.request("POST", path, key=False, headers=headers, raw=raw), 200)
        check(first.get("status") == "ignored", f"recorded, not applied (already paid): {first}")
        again = self.expect(self.request("POST", path, key=False, headers=headers, raw=raw), 200)
        check(again.get("status") == "duplicate", f"a redelivery is acknowledged: {again}")
        forged = {**headers, "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()}
        self.expect(
            self.request("POST", path, key=False, headers=forged, raw=raw),
            401,
            "webhook_signature_invalid",
        )
        after = self.order(order["id"])
        check(after["status"] == "paid", f"the order is still paid: {after['status']}")

    def step_events(self) -> None:
        order_id = self.paid["id"]
        print(f"  > XRANGE {self.stream} {self.stream_start} +  (entries of order {order_id[:8]}…)")

        def entries() -> list[dict] | None:
            stream: Any = self.redis.xrange(self.stream, min=self.stream_start)
            found = [fields for _, fields in stream if fields.get("aggregate_id") == order_id]
            return found if any(e.get("type") == "order.paid" for e in found) else None

        events = self.wait(entries, what=f"order.paid of {order_id} on the stream {self.stream}")
        for entry in events:
            payload = json.loads(entry.get("payload") or "{}")
            print(
                f"  < {entry.get('type'):<16} version {entry.get('version')}  "
                f"schema_version {entry.get('schema_version')}  id {entry.get('id')}  "
                f"payload keys {sorted(payload)}"
            )
        types = [entry.get("type") for entry in events]
        versions = [entry.get("version") for entry in events]
        check(types == ["order.created", "order.paid"], f"order.created, order.paid: {types}")
        check(versions == ["1", "2"], f"versions 1, 2 in stream order: {versions}")
        for entry in events:
            for field in ("id", "aggregate_type", "occurred_at", "correlation_id", "payload"):
                check(field in entry, f"the envelope has {field!r}: {sorted(entry)}")
            self.check_against_published_schema(entry)

    def check_against_published_schema(self, entry: dict) -> None:
        """The entry has the fields, and its payload the keys, that the schema the service
        publishes for its type and schema_version requires (the test suite validates every
        entry in full; the demo needs no JSON Schema library)."""
        # An entry published before the field existed follows version 1.
        name = f"{entry.get('type')}.v{entry.get('schema_version', '1')}.json"
        schema = self.expect(self.request("GET", f"/api/events/schemas/{name}", key=False), 200)
        required = set(schema["required"])
        check(required <= set(entry), f"{name}: the entry lacks {sorted(required - set(entry))}")
        payload_keys = set(json.loads(entry["payload"]))
        payload_schema = schema["properties"]["payload"]
        check(
            payload_keys == set(payload_schema["required"]),
            f"{name}: payload keys {sorted(payload_keys)}, the schema requires "
            f"{sorted(payload_schema['required'])}",
        )


def create_api_key(python: str) -> str:
    """A fresh API client through manage.py (the key is printed once, on stdout)."""
    name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    print(f"==> creating API client {name!r}: manage.py create_api_client")
    result = subprocess.run(
        [python, str(REPO / "manage.py"), "create_api_client", name],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        raise SetupError(f"create_api_client failed: {result.stderr.strip()[-500:]}")
    return result.stdout.strip().splitlines()[-1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base-url",
        default=env.get("DEMO_BASE_URL", "http://127.0.0.1:8000"),
        help="the running service (DEMO_BASE_URL; default http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--api-key",
        default=env.get("DEMO_API_KEY"),
        help="X-API-Key to use (DEMO_API_KEY); default: create an API client with manage.py",
    )
    parser.add_argument(
        "--redis-url",
        default=env.get("EVENT_STREAM_REDIS_URL") or env.get("REDIS_URL") or DEFAULT_REDIS_URL,
        help="the Redis of the event stream (EVENT_STREAM_REDIS_URL, else REDIS_URL)",
    )
    parser.add_argument(
        "--stream",
        default=env.get("EVENT_STREAM", DEFAULT_STREAM),
        help=f"the event stream (EVENT_STREAM; default {DEFAULT_STREAM})",
    )
    parser.add_argument(
        "--webhook-secret",
        default=(env.get("PAYMENT_WEBHOOK_SECRETS") or DEFAULT_WEBHOOK_SECRET).split(",")[0],
        help="whsec_ secret to sign the hand-made webhook (first of PAYMENT_WEBHOOK_SECRETS)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=float(env.get("DEMO_TIMEOUT", "30")),
        help="seconds to wait for the payment saga and the stream on a quiet machine "
        "(scaled up on a busy one; DEMO_TIMEOUT, default 30)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"==> orders API demo against {args.base_url} (stream {args.stream})")
    try:
        try:
            health = requests.get(f"{args.base_url.rstrip('/')}/healthz", timeout=5)
        except requests.RequestException as exc:
            raise SetupError(
                f"{args.base_url} does not answer ({type(exc).__name__}): start it with make run"
            ) from exc
        if health.status_code != 200:
            raise SetupError(f"{args.base_url}/healthz answered {health.status_code}")
        api_key = args.api_key or create_api_key(sys.executable)
        Demo(
            base_url=args.base_url,
            api_key=api_key,
            redis_url=args.redis_url,
            stream=args.stream,
            webhook_secret=args.webhook_secret,
            timeout=args.timeout,
        ).run()
    except SetupError as exc:
        print(f"\ndemo could not run: {exc}", file=sys.stderr)
        return 2
    except DemoFailure as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    except requests.RequestException as exc:
        print(f"\nFAILED: the service stopped answering: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
