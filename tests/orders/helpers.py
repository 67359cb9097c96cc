"""Helpers for the orders API tests: requests, a snapshot of everything an order changes,
and a small harness that runs requests from real threads with their own connections."""

from __future__ import annotations

import itertools
import json
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Sum
from rest_framework.test import APIClient

from catalog.models import Product
from orders.models import IdempotencyRecord, Order, OrderItem, OrderStatus
from outbox.models import OutboxEvent
from tests.factories import make_api_client
from tests.polling import eventually
from tests.together import StartLine, wait_threads

ORDERS_URL = "/api/v1/orders/"
_emails = itertools.count(1)


def unique_email() -> str:
    return f"buyer-{next(_emails)}-{uuid.uuid4().hex[:8]}@example.com"


def unique_key() -> str:
    return f"key-{uuid.uuid4().hex}"


def api_for(key: str, *, raise_request_exception: bool = True) -> APIClient:
    """An HTTP test client that sends `key` as its API key."""
    client = APIClient(raise_request_exception=raise_request_exception)
    client.credentials(HTTP_X_API_KEY=key)
    return client


def new_api(*, raise_request_exception: bool = True):
    """A fresh API client row and an HTTP client using its key: (row, key, http client)."""
    row, key = make_api_client()
    return row, key, api_for(key, raise_request_exception=raise_request_exception)


def order_body(lines: Iterable[tuple[Product | uuid.UUID | str, Any]], *, email: str | None = None):
    items = [
        {"product_id": str(getattr(product, "pk", product)), "quantity": quantity}
        for product, quantity in lines
    ]
    return {"email": email or unique_email(), "items": items}


def post_order(http: APIClient, body: Any, *, key: str | None = None, raw: str | None = None):
    """POST /api/v1/orders/ with an Idempotency-Key (a fresh one unless given; pass
    key=None explicitly through `headers` to omit it). `raw` sends the body bytes as they are."""
    extra = {"HTTP_IDEMPOTENCY_KEY": key if key is not None else unique_key()}
    data = raw if raw is not None else json.dumps(body)
    return http.post(ORDERS_URL, data=data, content_type="application/json", **extra)


def post_order_without_key(http: APIClient, body: Any):
    return http.post(ORDERS_URL, data=json.dumps(body), content_type="application/json")


def cancel_url(order_id) -> str:
    return f"{ORDERS_URL}{order_id}/cancel/"


def detail_url(order_id) -> str:
    return f"{ORDERS_URL}{order_id}/"


@dataclass(frozen=True)
class Snapshot:
    """Everything an order creation or cancellation can change."""

    orders: int
    items: int
    events: int
    idempotency_records: int
    stock: dict

    @classmethod
    def take(cls) -> Snapshot:
        return cls(
            orders=Order.objects.count(),
            items=OrderItem.objects.count(),
            events=OutboxEvent.objects.count(),
            idempotency_records=IdempotencyRecord.objects.count(),
            stock=dict(Product.objects.values_list("pk", "stock")),
        )


def sold_units(product: Product) -> int:
    """Units of `product` held by orders that are not cancelled."""
    return (
        OrderItem.objects.filter(product=product)
        .exclude(order__status=OrderStatus.CANCELLED)
        .aggregate(total=Sum("quantity"))["total"]
        or 0
    )


def run_in_threads(
    tasks: Sequence[Callable[[APIClient], Any]],
    *,
    workers: int,
    make_http: Callable[[], APIClient],
    timeout: float = 30.0,
) -> list[Any]:
    """Run `tasks` from `workers` real threads that start together (tests/together.py).

    Each thread has its own HTTP client and its own database connection, which it closes
    when done. Returns the tasks' results in task order; re-raises the first exception.
    `timeout` is how long a quiet machine may go without a task finishing: scaled by the
    machine's slowness, and extended by every task that finishes.
    """
    workers = min(workers, len(tasks))
    pending: queue.Queue[int] = queue.Queue()
    for index in range(len(tasks)):
        pending.put(index)
    results: list[Any] = [None] * len(tasks)
    errors: list[BaseException] = []
    start = StartLine(workers)

    def worker(http: APIClient) -> None:
        try:
            start.wait()
            while True:
                try:
                    index = pending.get_nowait()
                except queue.Empty:
                    return
                results[index] = tasks[index](http)
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)
        finally:
            connection.close()

    # The clients are made here: a thread that failed before the start line would only
    # show up as a start line never reached.
    threads = [
        threading.Thread(target=worker, args=(make_http(),), daemon=True) for _ in range(workers)
    ]
    for thread in threads:
        thread.start()
    start.release(what=f"{workers} worker threads at the start line")
    wait_threads(
        threads,
        what=f"{len(tasks)} tasks in {workers} threads",
        progress=lambda: sum(result is not None for result in results),
        timeout=timeout,
    )
    if errors:
        raise errors[0]
    return results


def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "the condition",
    progress: Callable[[], Any] | None = None,
):
    """Poll `predicate` until it returns something truthy, and return that.

    `timeout` is what a quiet machine needs, with a margin: it is scaled by the machine's
    slowness and extended while `progress()` changes (tests/polling.py), then fails naming
    `what`."""
    return eventually(predicate, timeout=timeout, interval=interval, what=what, progress=progress)
