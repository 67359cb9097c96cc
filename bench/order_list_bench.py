"""Read-path benchmark: `GET /api/v1/orders/?page_size=N` for a client with many paid orders.

Measures what one page of the order list costs in-process (Django test client → DRF →
PostgreSQL, no gunicorn, no network): SQL queries per request and milliseconds per request.
Written to compare ways of reading each order's `payment` (a mirror on the order row vs the
payments app's read-side hook, one query per page). A benchmark to run by hand, not a test.

    .venv/bin/python bench/order_list_bench.py                    # 300 orders, pages of 100
    .venv/bin/python bench/order_list_bench.py --orders 500 --requests 200 --smoke

Its own database (`orders_listbench` by default, created and migrated if missing; a new API
client per run, so earlier runs do not change what a page holds). Needs PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DbUrl, add_server_args, create_and_migrate, make_log

MARKER = "orders list benchmark database (bench/order_list_bench.py)"
log = make_log("list-bench")


def _environment(args: argparse.Namespace) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    return {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "API_RATE_LIMIT": "1000000000/60s",
        "ORDER_RATE_LIMIT": "1000000000/60s",
        "RATE_LIMIT_KEY_PREFIX": f"listbench-{run}:rl",
        "CELERY_QUEUE": f"listbench-{run}:celery",
        "OUTBOX_NUDGE_ON_COMMIT": "0",
        "PAYMENT_NUDGE_ON_COMMIT": "0",
        "DJANGO_SETTINGS_MODULE": "orders_project.settings",
    }


def _seed(*, orders: int) -> tuple[str, int]:
    """A new client with `orders` orders, each with a succeeded payment: (API key, count)."""
    from decimal import Decimal

    from django.apps import apps
    from django.utils import timezone

    from catalog.models import Product
    from clients.services import api_client_create
    from orders.models import Order
    from orders.services import OrderLine, order_create

    client, key = api_client_create(name=f"list-bench-{uuid.uuid4().hex[:8]}")
    product = Product.objects.create(
        sku=f"LISTBENCH-{uuid.uuid4().hex[:10]}",
        name="List bench product",
        price=Decimal("12.50"),
        stock=10 * orders + 10,
    )
    created = [
        order_create(
            client=client, email=f"buyer-{i}@example.com", lines=[OrderLine(product.pk, 1)]
        )
        for i in range(orders)
    ]
    payment_model = apps.get_model("payments", "Payment")
    mirrored = any(field.name == "payment_status" for field in Order._meta.get_fields())
    for order in created:
        provider_id = f"pay_{uuid.uuid4().hex}"
        payment_model.objects.update_or_create(
            order_id=order.pk,
            defaults={
                "status": "succeeded",
                "provider_payment_id": provider_id,
                "amount": order.total,
                "currency": order.currency,
                "email": order.email,
                "next_attempt_at": timezone.now(),
            },
        )
        if mirrored:  # the order row still carries a copy of its payment
            Order.objects.filter(pk=order.pk).update(
                payment_status="succeeded", provider_payment_id=provider_id
            )
    return key, len(created)


def _measure(*, key: str, page_size: int, requests: int) -> dict[str, float]:
    from django.db import connection
    from django.test import Client

    http = Client(HTTP_X_API_KEY=key)
    url = f"/api/v1/orders/?page_size={page_size}"
    for _ in range(5):  # warm up: connections, caches, first-request imports
        assert http.get(url).status_code == 200
    # Counted by an execute wrapper: Django clears connection.queries_log when a request
    # starts, so CaptureQueriesContext sees nothing of a test-client request.
    queries: list[str] = []

    def count(execute, sql, params, many, context):
        queries.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        page = http.get(url).json()
    with_payment = sum(1 for order in page["results"] if order["payment"] is not None)
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        response = http.get(url)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.content[:300]
    timings.sort()
    return {
        "orders_on_page": len(page["results"]),
        "with_payment": with_payment,
        "queries": len(queries),
        "p50_ms": statistics.median(timings),
        "p90_ms": timings[int(len(timings) * 0.9) - 1],
        "mean_ms": statistics.fmean(timings),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(
        parser,
        database_env="LISTBENCH_DATABASE_URL",
        database_default="postgres://postgres@127.0.0.1:5432/orders_listbench",
    )
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI: 20 orders")
    args = parser.parse_args()
    if args.smoke:
        args.orders, args.requests = 20, 5
    env = _environment(args)
    db = DbUrl.parse(args.database_url, default_name="orders_listbench")
    create_and_migrate(db, env, marker=MARKER, log=log)
    os.environ.update(env)
    import django

    django.setup()
    log(f"seeding {args.orders} orders with payments")
    key, _ = _seed(orders=args.orders)
    result = _measure(key=key, page_size=args.page_size, requests=args.requests)
    print(
        f"GET /api/v1/orders/?page_size={args.page_size}: {result['orders_on_page']} orders "
        f"({result['with_payment']} with a payment), {result['queries']} queries/request, "
        f"p50 {result['p50_ms']:.1f} ms, p90 {result['p90_ms']:.1f} ms, "
        f"mean {result['mean_ms']:.1f} ms over {args.requests} requests"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
