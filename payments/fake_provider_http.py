"""The fake payment provider's HTTP face (see fake_provider.py for what it does): the
request handler over a FakeProvider, and `serve`, which runs both."""

from __future__ import annotations

import hmac
import json
import logging
import random
import threading
import time
from dataclasses import asdict
from decimal import Decimal, InvalidOperation
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from payments.fake_provider import FakeProvider, ProviderConfig

logger = logging.getLogger("fake_provider")

MAX_BODY_BYTES = 64 * 1024


def _validate_create(body: Any) -> dict[str, Any] | str:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    for name in ("order_id", "amount", "currency", "email"):
        if not isinstance(body.get(name), str) or not body[name]:
            return f"{name} is required (string)"
    try:
        if Decimal(body["amount"]) <= 0:
            return "amount must be positive"
    except InvalidOperation:
        return "amount must be a decimal string"
    return body


def _bearer_ok(header: str | None, token: str | None) -> int | None:
    """None when `Authorization: Bearer <token>` matches; else the status to answer with.

    No configured token closes the endpoint for everyone (403): a forgotten setting must
    not open it. A missing or wrong token is 401. compare_digest: no timing hint."""
    if not token:
        return int(HTTPStatus.FORBIDDEN)
    scheme, _, offered = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        offered.strip().encode(), token.encode()
    ):
        return int(HTTPStatus.UNAUTHORIZED)
    return None


class FakeProviderHandler(BaseHTTPRequestHandler):
    """One HTTP request to the provider; `provider` is set by make_handler."""

    protocol_version = "HTTP/1.1"
    server_version = "FakePaymentProvider/1.0"
    provider: FakeProvider

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)

    def _reply(self, status: int, body: dict[str, Any], *, close: bool = False) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="fake-provider"')
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise ValueError("body too large")
        raw = self.rfile.read(length) if length else b"{}"
        return json.loads(raw or b"{}")

    def _refused(self) -> bool:
        """Answer 401/403 unless the request carries the configured bearer token."""
        status = _bearer_ok(self.headers.get("Authorization"), self.provider.config.token)
        if status is None:
            return False
        error = "token_required" if status == HTTPStatus.UNAUTHORIZED else "disabled"
        # The request's body is left unread: close the connection rather than parse it
        # as the next request.
        self.close_connection = True
        self._reply(status, {"error": error}, close=True)
        return True

    def do_GET(self) -> None:
        provider = self.provider
        time.sleep(provider.config.chaos.latency)
        path, _, query = self.path.partition("?")
        parts = path.strip("/").split("/")
        if parts == ["healthz"]:
            return self._reply(200, {"status": "ok"})
        if parts[:2] == ["v1", "payments"] and self._refused():
            return None
        with provider.lock:
            if parts == ["v1", "payments"]:
                params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                found = [
                    p
                    for p in provider.payments.values()
                    if p["order_id"] == params.get("order_id", p["order_id"])
                ]
                return self._reply(200, {"results": found})
            if len(parts) == 3 and parts[:2] == ["v1", "payments"]:
                payment = provider.payments.get(parts[2])
                if payment:
                    return self._reply(200, payment)
        return self._reply(404, {"error": "not_found"})

    def do_POST(self) -> None:
        provider = self.provider
        time.sleep(provider.config.chaos.latency)
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts == ["_chaos"] and self._refused():
            return None
        try:
            body = self._read_json()
        except (ValueError, json.JSONDecodeError):
            return self._reply(400, {"error": "malformed_json"})
        if parts == ["_chaos"]:
            return self._chaos_set(body)
        if parts == ["v1", "payments"]:
            return self._payment_create(body)
        if len(parts) == 4 and parts[:2] == ["v1", "payments"]:
            if parts[3] == "cancel":
                return self._reply(*provider.cancel_payment(parts[2]))
            if parts[3] == "refund":
                return self._reply(*provider.refund_payment(parts[2]))
        return self._reply(int(HTTPStatus.NOT_FOUND), {"error": "not_found"})

    def _chaos_set(self, body: Any) -> None:
        chaos = self.provider.config.chaos
        if not isinstance(body, dict):
            return self._reply(400, {"error": "malformed_json"})
        try:
            switches = {name: float(value) for name, value in body.items() if hasattr(chaos, name)}
        except (TypeError, ValueError):
            return self._reply(400, {"error": "switches must be numbers"})
        for name, value in switches.items():
            setattr(chaos, name, value)
        return self._reply(200, asdict(chaos))

    def _payment_create(self, body: Any) -> None:
        key = self.headers.get("Idempotency-Key")
        if not key:
            return self._reply(400, {"error": "idempotency_key_missing"})
        if random.random() < self.provider.config.chaos.error_rate:
            return self._reply(503, {"error": "temporarily_unavailable"})
        valid = _validate_create(body)
        if isinstance(valid, str):
            return self._reply(422, {"error": "invalid_request", "detail": valid})
        return self._reply(*self.provider.create_payment(key, valid))


def make_handler(provider: FakeProvider) -> type[BaseHTTPRequestHandler]:
    """A handler class serving `provider` (http.server builds one handler per request)."""
    return type("Handler", (FakeProviderHandler,), {"provider": provider})


def serve(host: str, port: int, config: ProviderConfig) -> None:
    """Serve until interrupted (SIGINT/SIGTERM end it through KeyboardInterrupt/SystemExit)."""
    provider = FakeProvider(config)
    deliveries = threading.Thread(target=provider.run_deliveries, name="deliveries", daemon=True)
    deliveries.start()
    server = ThreadingHTTPServer((host, port), make_handler(provider))
    server.daemon_threads = True
    logger.info(
        "fake payment provider on http://%s:%s, webhooks to %s", host, port, config.webhook_url
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        provider.stop()
        server.server_close()
