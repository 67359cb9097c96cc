"""Data-scale benchmark of the staff admin: N orders (one client), N items, N/10 products.

Seeds with COPY (psycopg's `cursor.copy`) into its own database, then times the admin pages
staff live in — the order changelist, ?status__exact=paid, ?q=<email> and the operations page —
as a logged-in superuser through the Django test client (in-process: no gunicorn, no
network), and prints EXPLAIN (ANALYZE) of each page's slowest queries. Run it at two sizes
and compare: a page should cost about the same at 1 M orders as at 10 k (issue 11).

    .venv/bin/python bench/seed_scale.py --orders 10000
    .venv/bin/python bench/seed_scale.py --orders 1000000 --requests 5
    .venv/bin/python bench/seed_scale.py --smoke        # CI size: 2 000 orders

Its own database (`orders_scale` by default, created and migrated if missing, its orders,
items and products replaced on every run). Needs PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DbUrl, add_server_args, create_and_migrate, make_log

MARKER = "admin data-scale benchmark database (bench/seed_scale.py)"
log = make_log("scale-bench")

# Current status of a seeded order by its number: half paid, a fifth pending, the rest
# cancelled or refunded (every status shows up in the filters and charts).
STATUS_CYCLE = ("paid",) * 10 + ("pending_payment",) * 4 + ("cancelled",) * 5 + ("refunded",)
# Orders are spread over this span, newest now: the operations page's 24 h window holds a
# share of them at every size.
SPAN = timedelta(days=30)
# Each e-mail address has this many orders at every size, so ?q=<email> finds as many.
ORDERS_PER_EMAIL = 20
SEARCHED_EMAIL = "buyer-7@example.com"
PAGES = (
    ("changelist", "/admin/orders/order/"),
    ("?status__exact=paid", "/admin/orders/order/?status__exact=paid"),
    ("?q=<email>", f"/admin/orders/order/?q={SEARCHED_EMAIL}"),
    ("operations page", "/admin/operations/"),
)


def _environment(args: argparse.Namespace) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    return {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_KEY_PREFIX": f"scalebench-{run}:rl",
        "CELERY_QUEUE": f"scalebench-{run}:celery",
        "OUTBOX_NUDGE_ON_COMMIT": "0",
        "PAYMENT_NUDGE_ON_COMMIT": "0",
        "DJANGO_SETTINGS_MODULE": "orders_project.settings",
    }


# --- seeding -----------------------------------------------------------------------------


def _product_rows(count: int, now: datetime):
    for i in range(count):
        yield (uuid.uuid4(), f"SCALE-{i:07d}", f"Scale product {i}", "", "12.50", 10**6, True,
               now, now)  # fmt: skip


def _order_rows(count: int, client_id: uuid.UUID, now: datetime, products: list[uuid.UUID]):
    """(order row, item row) per order, newest first, created_at spread over SPAN."""
    step = SPAN / max(count, 1)
    emails = max(count // ORDERS_PER_EMAIL, 1)
    for i in range(count):
        created = now - step * i
        status = STATUS_CYCLE[i % len(STATUS_CYCLE)]
        paid_at = created + timedelta(minutes=1) if status in ("paid", "refunded") else None
        cancelled = status == "cancelled"
        order_id = uuid.uuid4()
        product = products[i % len(products)]
        yield (
            (order_id, client_id, f"buyer-{i % emails}@example.com", status,
             "payment_expired" if cancelled else "", "25.00", "EUR", created, created, paid_at,
             created + timedelta(minutes=30) if cancelled else None,
             created + timedelta(minutes=30), 1),
            (uuid.uuid4(), order_id, product, f"SCALE-{i % len(products):07d}", "Scale product",
             "12.50", 2, "25.00"),
        )  # fmt: skip


PRODUCT_COLUMNS = "id, sku, name, description, price, stock, is_active, created_at, updated_at"
ORDER_COLUMNS = (
    "id, client_id, email, status, cancel_reason, total, currency, created_at, updated_at, "
    "paid_at, cancelled_at, expires_at, event_version"
)
ITEM_COLUMNS = "id, order_id, product_id, sku, name, unit_price, quantity, line_total"


def _seed(db: DbUrl, *, orders: int) -> None:
    """Replace the database's orders, items and products by `orders` orders of one client."""
    from clients.services import api_client_create

    client, _ = api_client_create(name=f"scale-bench-{uuid.uuid4().hex[:8]}")
    now = datetime.now(UTC)
    product_count = max(orders // 10, 1)
    with db.connect(autocommit=False) as conn, conn.cursor() as cursor:
        cursor.execute("TRUNCATE orders_orderitem, orders_orderstatuschange, orders_order CASCADE")
        cursor.execute("TRUNCATE catalog_product CASCADE")
        started = time.perf_counter()
        products = []
        with cursor.copy(f"COPY catalog_product ({PRODUCT_COLUMNS}) FROM STDIN") as copy:
            for row in _product_rows(product_count, now):
                products.append(row[0])
                copy.write_row(row)
        items = []
        with cursor.copy(f"COPY orders_order ({ORDER_COLUMNS}) FROM STDIN") as copy:
            for order, item in _order_rows(orders, client.pk, now, products):
                copy.write_row(order)
                items.append(item)
        with cursor.copy(f"COPY orders_orderitem ({ITEM_COLUMNS}) FROM STDIN") as copy:
            for item in items:
                copy.write_row(item)
        conn.commit()
        log(f"copied {orders} orders, {orders} items, {product_count} products "
            f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
    with db.connect() as conn:
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE catalog_product, orders_order, orders_orderitem")
        log(f"VACUUM ANALYZE in {time.perf_counter() - started:.1f} s")


# --- measuring ---------------------------------------------------------------------------


def _staff_client():
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_superuser(
        username=f"scale-{uuid.uuid4().hex[:8]}", email="staff@example.com", password=None
    )
    http = Client()
    http.force_login(user)
    return http


def _queries_of(http, url: str) -> list[tuple[float, str, object]]:
    """(ms, sql, params) of every query one GET of `url` makes."""
    from django.db import connection

    queries: list[tuple[float, str, object]] = []

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            queries.append(((time.perf_counter() - started) * 1000, sql, params))

    with connection.execute_wrapper(timed):
        assert http.get(url).status_code == 200
    return queries


def _explain(sql: str, params: object) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {sql}", params)
        return [row[0] for row in cursor.fetchall()]


def _measure(http, url: str, *, requests: int) -> dict[str, float]:
    for _ in range(2):  # warm up: connections, caches, first-request imports
        assert http.get(url).status_code == 200, url
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        response = http.get(url)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.content[:300]
    return {"p50_ms": statistics.median(timings), "min_ms": min(timings)}


def _report(http, *, orders: int, requests: int, explain: int) -> None:
    for name, url in PAGES:
        result = _measure(http, url, requests=requests)
        queries = _queries_of(http, url)
        print(
            f"admin {name}: {orders} orders, {len(queries)} queries, "
            f"p50 {result['p50_ms']:.1f} ms, min {result['min_ms']:.1f} ms "
            f"over {requests} requests",
            flush=True,
        )
        # The slowest statements that read data (the admin's own EXPLAIN probes excluded).
        reads = [query for query in queries if not query[1].startswith("EXPLAIN")]
        for ms, sql, params in sorted(reads, key=lambda q: -q[0])[:explain]:
            print(f"  {ms:.1f} ms: {sql[:300]}")
            for line in _explain(sql, params):
                print(f"      {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(
        parser,
        database_env="SCALEBENCH_DATABASE_URL",
        database_default="postgres://postgres@127.0.0.1:5432/orders_scale",
    )
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--explain", type=int, default=2, help="slowest queries explained/page")
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI: 2 000 orders")
    parser.add_argument(
        "--skip-seed", action="store_true", help="measure the orders an earlier run seeded"
    )
    args = parser.parse_args()
    if args.smoke:
        args.orders, args.requests = 2_000, 3
    env = _environment(args)
    db = DbUrl.parse(args.database_url, default_name="orders_scale")
    if not create_and_migrate(db, env, marker=MARKER, log=log):
        log(f"{db.name} was not created by this script: refusing to replace its orders")
        return 2
    os.environ.update(env)
    import django

    django.setup()
    if args.skip_seed:
        from orders.models import Order

        args.orders = Order.objects.count()
    else:
        log(f"seeding {args.orders} orders")
        _seed(db, orders=args.orders)
    _report(_staff_client(), orders=args.orders, requests=args.requests, explain=args.explain)
    return 0


if __name__ == "__main__":
    sys.exit(main())
