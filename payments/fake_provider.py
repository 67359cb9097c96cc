"""A fake payment provider that behaves like a real one over HTTP (SPEC §5).

Run it as its own process: `python manage.py run_fake_provider` (port 8100). It knows
nothing of the service's database; it talks HTTP only:

- `POST /v1/payments` (with `Idempotency-Key`) creates a payment; the same key returns the
  same payment. After `--webhook-delay` seconds the payment succeeds, or fails when the
  customer email's local part ends in `+decline`, and a signed webhook is sent.
- `POST /v1/payments/{id}/cancel` cancels a payment that has no outcome yet (409 otherwise).
- `POST /v1/payments/{id}/refund` refunds a succeeded payment (`refund.succeeded` webhook).
- `GET /v1/payments/{id}` and `GET /v1/payments?order_id=...` read payments back.
- `POST /_chaos` changes the chaos switches at run time (tests use it).

The reads (which carry customer emails) and `/_chaos` need `Authorization: Bearer <token>`
(`--token` / FAKE_PROVIDER_TOKEN, compared in constant time); with no token configured
they are refused (403), never open.

Webhooks are signed the Standard Webhooks way and retried with backoff until the receiver
answers 2xx. State (payments and undelivered webhooks) is kept in `--state-file` so a
restart loses nothing, as with a real provider. Chaos switches: `--error-rate` (5xx on
create), `--latency` (added to every answer), `--duplicate-rate` (a webhook sent twice),
`--out-of-order` (webhooks held back by a random delay so later ones can overtake).

This module is the provider's state (payments, idempotency keys, webhook deliveries);
fake_provider_http.py is its HTTP face and `serve`.
"""

from __future__ import annotations

import heapq
import json
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from payments.signatures import webhook_sign

logger = logging.getLogger("fake_provider")

DELIVERY_BACKOFF_SECONDS = (0.5, 1, 2, 4, 8, 15, 30)


@dataclass
class Chaos:
    error_rate: float = 0.0  # probability that a create answers 503
    latency: float = 0.0  # seconds added to every answer
    duplicate_rate: float = 0.0  # probability that a webhook is delivered twice
    out_of_order: float = 0.0  # up to this many extra seconds of random delivery delay


@dataclass
class ProviderConfig:
    webhook_url: str
    webhook_secret: str  # whsec_<base64>
    webhook_delay: float = 1.0
    state_file: Path | None = None
    chaos: Chaos = field(default_factory=Chaos)
    # Bearer token of the reads and /_chaos; None or empty: those endpoints are refused.
    token: str | None = None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class FakeProvider:
    """Payments, idempotency keys and the webhook delivery queue, behind one lock."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.payments: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, str] = {}  # Idempotency-Key -> payment id
        # (due time, sequence, delivery) — deliveries are dicts so they persist as JSON.
        self.queue: list[tuple[float, int, dict[str, Any]]] = []
        # Deliveries being posted right now: still owed until the receiver said 2xx, so they
        # are saved with the queue (a restart mid-post sends them again, never drops them).
        self.in_flight: dict[int, dict[str, Any]] = {}
        self.sequence = 0
        self.wakeup = threading.Condition(self.lock)
        self.stopping = False
        self._load()

    # --- persistence ----------------------------------------------------------------
    def _load(self) -> None:
        path = self.config.state_file
        if not path or not path.exists():
            return
        state = json.loads(path.read_text())
        self.payments = state["payments"]
        self.keys = state["keys"]
        for delivery in state["deliveries"]:
            self._schedule(delivery, delay=0.0, persist=False)

    def _save(self) -> None:
        path = self.config.state_file
        if not path:
            return
        state = {
            "payments": self.payments,
            "keys": self.keys,
            "deliveries": [delivery for _, _, delivery in self.queue]
            + list(self.in_flight.values()),
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(path)  # atomic: a crash leaves the old or the new state, never half

    # --- payments -------------------------------------------------------------------
    def create_payment(self, key: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if key in self.keys:
                return 200, self.payments[self.keys[key]]
            payment = {
                "id": "pay_" + uuid.uuid4().hex,
                "status": "pending",
                "order_id": request["order_id"],
                "amount": request["amount"],
                "currency": request["currency"],
                "email": request["email"],
                "created_at": _now_iso(),
            }
            self.payments[payment["id"]] = payment
            self.keys[key] = payment["id"]
            outcome = "failed" if self._declines(payment["email"]) else "succeeded"
            self._schedule(
                {"kind": "outcome", "payment_id": payment["id"], "outcome": outcome, "attempt": 0},
                delay=self.config.webhook_delay,
            )
            return 201, payment

    @staticmethod
    def _declines(email: str) -> bool:
        local_part = email.rsplit("@", 1)[0]
        return local_part.endswith("+decline")

    def cancel_payment(self, payment_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            payment = self.payments.get(payment_id)
            if payment is None:
                return 404, {"error": "not_found"}
            if payment["status"] in ("pending", "cancelled"):
                payment["status"] = "cancelled"
                self._save()
                return 200, payment
            return 409, {"error": f"payment_{payment['status']}", "payment": payment}

    def refund_payment(self, payment_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            payment = self.payments.get(payment_id)
            if payment is None:
                return 404, {"error": "not_found"}
            if payment["status"] in ("refund_pending", "refunded"):
                return 200, payment
            if payment["status"] != "succeeded":
                return 409, {"error": f"payment_{payment['status']}", "payment": payment}
            payment["status"] = "refund_pending"
            self._schedule(
                {"kind": "refund", "payment_id": payment_id, "attempt": 0},
                delay=self.config.webhook_delay,
            )
            return 200, payment

    # --- webhook delivery -----------------------------------------------------------
    def _schedule(self, delivery: dict[str, Any], *, delay: float, persist: bool = True) -> None:
        with self.lock:
            extra = random.uniform(0, self.config.chaos.out_of_order)
            self.sequence += 1
            heapq.heappush(self.queue, (time.time() + delay + extra, self.sequence, delivery))
            if persist:
                self._save()
            self.wakeup.notify()

    def _resolve(self, delivery: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """Turn a due delivery into (event type, data); applies the outcome the first time."""
        payment = self.payments[delivery["payment_id"]]
        if delivery["kind"] == "outcome":
            if payment["status"] == "cancelled":
                return None  # cancelled before an outcome: nothing to tell
            if payment["status"] == "pending":
                payment["status"] = delivery["outcome"]
            event = "payment.succeeded" if delivery["outcome"] == "succeeded" else "payment.failed"
        else:
            payment["status"] = "refunded"
            event = "refund.succeeded"
        data = {
            "payment_id": payment["id"],
            "order_id": payment["order_id"],
            "amount": payment["amount"],
            "currency": payment["currency"],
        }
        if event == "payment.failed":
            data["failure_reason"] = "card_declined"
        return event, data

    def run_deliveries(self) -> None:
        while True:
            with self.lock:
                while not self.stopping and (not self.queue or self.queue[0][0] > time.time()):
                    timeout = (self.queue[0][0] - time.time()) if self.queue else None
                    self.wakeup.wait(timeout=timeout)
                if self.stopping:
                    return
                _, sequence, delivery = heapq.heappop(self.queue)
                if "body" not in delivery:
                    resolved = self._resolve(delivery)
                    if resolved is None:
                        self._save()
                        continue
                    event_type, data = resolved
                    delivery["webhook_id"] = "msg_" + uuid.uuid4().hex
                    delivery["body"] = json.dumps(
                        {"type": event_type, "data": data, "created_at": _now_iso()}
                    )
                self.in_flight[sequence] = delivery
                self._save()
            delivered = self._post(delivery)
            if delivered and random.random() < self.config.chaos.duplicate_rate:
                self._post(delivery)  # the same webhook-id again, as real providers do
            with self.lock:
                self.in_flight.pop(sequence, None)
                if delivered:
                    self._save()
                else:
                    delivery["attempt"] += 1
                    backoff = DELIVERY_BACKOFF_SECONDS[
                        min(delivery["attempt"], len(DELIVERY_BACKOFF_SECONDS)) - 1
                    ]
                    self._schedule(delivery, delay=backoff)

    def _post(self, delivery: dict[str, Any]) -> bool:
        body = delivery["body"].encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": delivery["webhook_id"],
            "webhook-timestamp": str(timestamp),
            "webhook-signature": webhook_sign(
                secret=self.config.webhook_secret,
                webhook_id=delivery["webhook_id"],
                timestamp=timestamp,
                body=body,
            ),
        }
        try:
            response = requests.post(
                self.config.webhook_url, data=body, headers=headers, timeout=10
            )
        except requests.RequestException as exc:
            logger.info("webhook not delivered: %s %s", exc, delivery["webhook_id"])
            return False
        if not 200 <= response.status_code < 300:
            logger.info("webhook refused: %s %s", response.status_code, delivery["webhook_id"])
            return False
        return True

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.wakeup.notify_all()
