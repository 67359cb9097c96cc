"""Request bodies sent with `Transfer-Encoding: chunked` are read (issue 9 item 15).

End to end against a real gunicorn (its wsgi.input de-chunks; Django alone would see an
empty body): http.client sends the body in several chunks without a Content-Length.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Iterable, Iterator

import pytest
from django.conf import settings
from django.db import connection

from orders.models import Order
from payments.signatures import webhook_sign
from scripts.processes import REPO, database_url, service_env, start_process, web_command
from scripts.servers import free_port
from tests.factories import make_api_client, make_product
from tests.payments.helpers import WEBHOOK_SECRET

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BODY_LIMIT = 64 * 1024  # MAX_REQUEST_BODY_BYTES of the gunicorn under test


@pytest.fixture
def web(tmp_path) -> Iterator[int]:
    """gunicorn (2 sync workers, as `make run`) on a free port; yields the port."""
    port = free_port()
    env = service_env(
        database_url=database_url(connection.settings_dict),  # pytest's test database
        redis_url=settings.REDIS_URL,
        names=f"chunked-{uuid.uuid4().hex[:8]}",
        DEBUG="0",
        PORT=str(port),
        WEB_CONCURRENCY="2",
        WEB_THREADS="1",
        MAX_REQUEST_BODY_BYTES=str(BODY_LIMIT),
        PAYMENT_WEBHOOK_SECRETS=WEBHOOK_SECRET,
        API_RATE_LIMIT="100000/60s",
        ORDER_RATE_LIMIT="100000/60s",
        PAYMENT_NUDGE_ON_COMMIT="0",
        OUTBOX_NUDGE_ON_COMMIT="0",
    )
    process = start_process("web", web_command(), env, tmp_path / "web.log", cwd=REPO)
    try:
        process.wait_http_ok(f"http://127.0.0.1:{port}/healthz", timeout=60, what="gunicorn up")
        yield port
    finally:
        process.stop()
        print(process.log_tail(40))  # shown when the test failed


def _chunks(data: bytes, size: int) -> Iterable[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _post_chunked(
    port: int, path: str, body: bytes, headers: dict[str, str], *, chunk: int = 7
) -> tuple[int, dict[str, str], bytes]:
    """POST `body` as chunks of `chunk` bytes, Transfer-Encoding: chunked, no Content-Length."""
    connection_ = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        # An iterable body and encode_chunked=True: http.client frames each item as a chunk
        # and sends Transfer-Encoding: chunked (and no Content-Length).
        connection_.request(
            "POST", path, body=_chunks(body, chunk), headers=headers, encode_chunked=True
        )
        response = connection_.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection_.close()


def _order_body(product) -> bytes:
    return json.dumps(
        {"email": "chunked@example.com", "items": [{"product_id": str(product.pk), "quantity": 2}]}
    ).encode()


def test_a_chunked_order_is_created(web):
    # given a product and an API key
    product = make_product(stock=10)
    _row, key = make_api_client()

    # when an order is posted in 7-byte chunks, without Content-Length
    status, _headers, body = _post_chunked(
        web,
        "/api/v1/orders/",
        _order_body(product),
        {"Content-Type": "application/json", "X-API-Key": key, "Idempotency-Key": "chunked-1"},
    )

    # then it is created like any other order
    assert status == 201, body
    order = json.loads(body)
    assert order["email"] == "chunked@example.com"
    assert order["items"][0]["quantity"] == 2
    product.refresh_from_db()
    assert product.stock == 8


def test_an_oversized_chunked_body_is_413_problem_json(web):
    # given an API key and a body one byte over the limit
    _row, key = make_api_client()
    body = b'{"email": "' + b"a" * (BODY_LIMIT - 12) + b'"}'
    assert len(body) == BODY_LIMIT + 1

    # when it is posted chunked (64 KiB chunks)
    status, headers, raw = _post_chunked(
        web,
        "/api/v1/orders/",
        body,
        {"Content-Type": "application/json", "X-API-Key": key, "Idempotency-Key": "chunked-2"},
        chunk=64 * 1024,
    )

    # then 413 payload_too_large as problem+json, and no order
    assert status == 413, raw
    assert headers["Content-Type"] == "application/problem+json"
    assert json.loads(raw)["code"] == "payload_too_large"
    assert not Order.objects.exists()


def test_a_chunked_body_at_the_limit_is_read_whole(web):
    # given a body of exactly the limit (valid JSON, not a valid order)
    _row, key = make_api_client()
    body = b'{"email": "' + b"a" * (BODY_LIMIT - 13) + b'"}'
    assert len(body) == BODY_LIMIT

    # when it is posted chunked
    status, _headers, raw = _post_chunked(
        web,
        "/api/v1/orders/",
        body,
        {"Content-Type": "application/json", "X-API-Key": key, "Idempotency-Key": "chunked-3"},
        chunk=5000,
    )

    # then it was parsed whole: the email is invalid and the items missing (not "required")
    assert status == 400, raw
    errors = {e["field"]: e["message"] for e in json.loads(raw)["errors"]}
    assert "items" in errors
    assert "required" not in errors.get("email", "")


def _signed(body: bytes) -> dict[str, str]:
    webhook_id = f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    return {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhook_sign(
            secret=WEBHOOK_SECRET, webhook_id=webhook_id, timestamp=timestamp, body=body
        ),
    }


def _webhook(order_id: str, amount: str) -> bytes:
    return json.dumps(
        {
            "type": "payment.succeeded",
            "data": {
                "payment_id": f"pay_{uuid.uuid4().hex[:12]}",
                "order_id": order_id,
                "amount": amount,
                "currency": "USD",
            },
            "created_at": "2025-01-01T00:00:00+00:00",
        }
    ).encode()


def test_a_chunked_signed_webhook_is_verified_and_applied(web):
    # given an order placed over HTTP
    product = make_product(stock=10)
    _row, key = make_api_client()
    status, _h, raw = _post_chunked(
        web,
        "/api/v1/orders/",
        _order_body(product),
        {"Content-Type": "application/json", "X-API-Key": key, "Idempotency-Key": "chunked-4"},
    )
    assert status == 201, raw
    order = json.loads(raw)

    # when the provider's signed success for it arrives chunked
    body = _webhook(order["id"], order["total"])
    status, _headers, raw = _post_chunked(web, "/api/v1/payments/webhook/", body, _signed(body))

    # then the signature verified over the whole body, and the order is paid
    assert status == 200, raw
    assert json.loads(raw)["status"] == "applied"
    assert Order.objects.get(pk=order["id"]).status == "paid"


def test_a_chunked_signed_webhook_for_an_unknown_order_waits(web):
    # given no such order
    body = _webhook(str(uuid.uuid4()), "10.00")

    # when its signed webhook arrives chunked
    status, _headers, raw = _post_chunked(web, "/api/v1/payments/webhook/", body, _signed(body))

    # then it is verified and parked until the order shows up: 200 waiting, not 401
    assert status == 200, raw
    assert json.loads(raw)["status"] == "waiting"


def test_a_server_that_passes_chunk_framing_through_gets_411():
    # given the WSGI application under a server that does not de-chunk wsgi.input (no
    # wsgi.input_terminated, like wsgiref/runserver): the raw chunk framing is the body
    from django.test.client import FakePayload

    from orders_project.wsgi import application

    framed = b'7\r\n{"a": 1\r\n1\r\n}\r\n0\r\n\r\n'
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/orders/",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": "testserver",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "CONTENT_TYPE": "application/json",
        "wsgi.input": FakePayload(framed),
        "wsgi.url_scheme": "http",
        "wsgi.errors": None,
    }
    started = {}

    def start_response(status, headers, exc_info=None):
        started.update(status=status, headers=dict(headers))

    # when a chunked request arrives
    body = b"".join(application(environ, start_response))

    # then 411 problem+json: the body is not guessed at
    assert started["status"].startswith("411")
    assert started["headers"]["Content-Type"] == "application/problem+json"
    assert json.loads(body)["code"] == "length_required"
