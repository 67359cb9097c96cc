"""Data-scale benchmark: the staff admin and the API over a small and a large database, timed
side by side, with the ratio of the two (issue 11: each page at 1 M orders within 1.2× of its
time at 10 k orders).

Two databases, each its own (created and migrated if missing, marked as this script's, its
orders, items, products and outbox replaced on every seeding run):

- large: `--database-url` (default `orders_scale`), `--orders` (default 1 000 000);
- small: `--baseline-database-url` (default: the large one's name + `_baseline`),
  `--baseline-orders` (default 10 000).

Each holds N orders of one API client spread over the last 30 days (one item each, 20 orders
per e-mail address at every size), N/10 products, and the outbox events of the orders of the
last OUTBOX_RETENTION (published; plus the same few pending and dead events at every size),
written with COPY (psycopg's `cursor.copy`). A later run with `--skip-seed` reuses them and
first tops up the orders (and their events) from the newest one to now at the seeded rate, so
the last hours hold as many orders as they did at seeding time.

Every page is requested in-process (the Django test client: no gunicorn, no network), the
admin as a logged-in superuser, the API with the seeded client's key, alternating between the
two databases request by request on two open connections (so a busy moment of the machine
hits both sizes alike), after a refresh of the operations page's hourly rollup (what beat
does every minute; the refresh is timed too, as a background task). Printed: a table of the
p50 per size and their ratio (and the ratio of the minimums, steadier on a busy machine);
written: `bench/results/scale-<stamp>.json`, and `EXPLAIN (ANALYZE, BUFFERS)` of every query
of every admin page at both sizes in `bench/results/admin_scale_explain.txt`.

    .venv/bin/python bench/seed_scale.py                       # seed 10 k and 1 M, measure
    .venv/bin/python bench/seed_scale.py --skip-seed           # measure again (top-up only)
    .venv/bin/python bench/seed_scale.py --smoke               # CI size: 2 000 vs 200 orders

Needs PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    RAISED_RATE,
    RESULTS_DIR,
    DbUrl,
    add_server_args,
    core_count,
    create_and_migrate,
    git_revision,
    make_log,
    shown_path,
    utc_stamp,
    write_json,
)

MARKER = "admin data-scale benchmark database (bench/seed_scale.py)"
log = make_log("scale-bench")

GOAL = 1.2  # issue 11: a page at the large size within 1.2x of its time at the small one
# Current status of a seeded order by its sequence number: half paid, a fifth pending, the
# rest cancelled or refunded (every status shows up in the filters and charts).
STATUS_CYCLE = ("paid",) * 10 + ("pending_payment",) * 4 + ("cancelled",) * 5 + ("refunded",)
# The events each status implies (order.created, then the transitions), as the service writes.
EVENTS = {
    "pending_payment": ("order.created",),
    "paid": ("order.created", "order.paid"),
    "cancelled": ("order.created", "order.cancelled"),
    "refunded": ("order.created", "order.paid", "order.refunded"),
}
# Orders are spread over this span, newest now: the operations page's 24 h window holds the
# same share of them at every size.
SPAN = timedelta(days=30)
# Each e-mail address has this many orders at every size, so ?q=<email> finds as many.
ORDERS_PER_EMAIL = 20
SEARCHED_EMAIL = "buyer-7@example.com"
# The same small backlog at every size: the operations page's lag and dead-letter tiles.
BACKLOG = {"pending": 3, "dead": 2}
SEED_TABLE = "bench_seed_scale"  # this script's own record of what it seeded


def _environment(args: argparse.Namespace) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    return {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "API_RATE_LIMIT": RAISED_RATE,
        "ORDER_RATE_LIMIT": RAISED_RATE,
        "RATE_LIMIT_KEY_PREFIX": f"scalebench-{run}:rl",
        "CELERY_QUEUE": f"scalebench-{run}:celery",
        "OUTBOX_NUDGE_ON_COMMIT": "0",
        "PAYMENT_NUDGE_ON_COMMIT": "0",
        # Connections live for the whole run: none is reopened (cold) inside a timed request.
        "DB_CONN_MAX_AGE": "86400",
        "DJANGO_SETTINGS_MODULE": "orders_project.settings",
    }


# --- seeding -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    """What a seeding run wrote: order k (0 = oldest) was created at origin + k × step."""

    orders: int
    products: int
    emails: int
    origin: datetime
    step: timedelta
    client_id: uuid.UUID
    product_ids: list[uuid.UUID] = field(repr=False)

    def created(self, k: int) -> datetime:
        return self.origin + self.step * k


def _order_rows(seed: Seed, ks: range, retention_start: datetime) -> Iterator[tuple]:
    """(order row, item row, event rows) of the orders with sequence numbers `ks`."""
    for k in ks:
        created = seed.created(k)
        status = STATUS_CYCLE[k % len(STATUS_CYCLE)]
        paid_at = created + timedelta(minutes=1) if status in ("paid", "refunded") else None
        cancelled = status == "cancelled"
        order_id = uuid.uuid4()
        product = k % seed.products
        events = EVENTS[status]
        order = (order_id, seed.client_id, f"buyer-{k % seed.emails}@example.com", status,
                 "payment_expired" if cancelled else "", "25.00", "EUR", created, created,
                 paid_at, created + timedelta(minutes=30) if cancelled else None,
                 created + timedelta(minutes=30), len(events))  # fmt: skip
        item = (uuid.uuid4(), order_id, seed.product_ids[product], f"SCALE-{product:07d}",
                "Scale product", "12.50", 2, "25.00")  # fmt: skip
        rows = []
        if created >= retention_start:
            for version, kind in enumerate(events, start=1):
                at = created + timedelta(minutes=version - 1)
                rows.append(_event_row(kind, order_id, version, at, "published"))
        yield order, item, rows


def _event_row(kind: str, order_id: uuid.UUID, version: int, at: datetime, status: str):
    published = at + timedelta(milliseconds=40) if status == "published" else None
    return (uuid.uuid4(), kind, "order", str(order_id), version, at, "",
            json.dumps({"order_id": str(order_id), "status": kind.split(".")[1]}),
            status, 1 if published else 0, at, published, at,
            "boom: the sink refused it" if status == "dead" else "")  # fmt: skip


PRODUCT_COLUMNS = "id, sku, name, description, price, stock, is_active, created_at, updated_at"
ORDER_COLUMNS = (
    "id, client_id, email, status, cancel_reason, total, currency, created_at, updated_at, "
    "paid_at, cancelled_at, expires_at, event_version"
)
ITEM_COLUMNS = "id, order_id, product_id, sku, name, unit_price, quantity, line_total"
EVENT_COLUMNS = (
    "id, type, aggregate_type, aggregate_id, version, occurred_at, correlation_id, payload, "
    "status, attempts, next_attempt_at, published_at, created_at, last_error"
)


def _copy_orders(cursor, seed: Seed, ks: range, retention_start: datetime) -> int:
    """COPY the orders `ks`, their items and their events; returns the events written."""
    items, events = [], []
    with cursor.copy(f"COPY orders_order ({ORDER_COLUMNS}) FROM STDIN") as copy:
        for order, item, rows in _order_rows(seed, ks, retention_start):
            copy.write_row(order)
            items.append(item)
            events.extend(rows)
    with cursor.copy(f"COPY orders_orderitem ({ITEM_COLUMNS}) FROM STDIN") as copy:
        for item in items:
            copy.write_row(item)
    with cursor.copy(f"COPY outbox_outboxevent ({EVENT_COLUMNS}) FROM STDIN") as copy:
        for event in events:
            copy.write_row(event)
    return len(events)


def _seed(db: DbUrl, *, orders: int, outbox: bool) -> None:
    """Replace the database's orders, items, products and events by `orders` orders."""
    from django.conf import settings

    from clients.services import api_client_create

    client, _ = api_client_create(name=f"scale-bench-{uuid.uuid4().hex[:8]}")
    now = datetime.now(UTC)
    products = max(orders // 10, 1)
    step = SPAN / max(orders, 1)
    retention = timedelta(seconds=settings.OUTBOX_RETENTION) if outbox else timedelta(0)
    started = time.perf_counter()
    with db.connect(autocommit=False) as conn, conn.cursor() as cursor:
        cursor.execute(
            "TRUNCATE orders_orderitem, orders_orderstatuschange, orders_order, "
            "outbox_outboxevent, catalog_product CASCADE"
        )
        product_ids = _copy_products(cursor, products, now)
        seed = Seed(orders, products, max(orders // ORDERS_PER_EMAIL, 1),
                    now - step * (orders - 1), step, client.pk, product_ids)  # fmt: skip
        events = _copy_orders(cursor, seed, range(orders), now - retention if outbox else now)
        _copy_backlog(cursor, now)
        _record_seed(cursor, seed)
        conn.commit()
    log(f"{db.name}: copied {orders} orders and items, {products} products, {events} events "
        f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
    _vacuum(db)


def _copy_products(cursor, count: int, now: datetime) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    with cursor.copy(f"COPY catalog_product ({PRODUCT_COLUMNS}) FROM STDIN") as copy:
        for i, product_id in enumerate(ids):
            copy.write_row((product_id, f"SCALE-{i:07d}", f"Scale product {i}", "", "12.50",
                            10**6, True, now, now))  # fmt: skip
    return ids


def _copy_backlog(cursor, now: datetime) -> None:
    with cursor.copy(f"COPY outbox_outboxevent ({EVENT_COLUMNS}) FROM STDIN") as copy:
        for status, count in BACKLOG.items():
            for _ in range(count):
                copy.write_row(_event_row("order.created", uuid.uuid4(), 1, now, status))


def _record_seed(cursor, seed: Seed) -> None:
    cursor.execute(f"CREATE TABLE IF NOT EXISTS {SEED_TABLE} (seed jsonb NOT NULL)")
    cursor.execute(f"TRUNCATE {SEED_TABLE}")
    record = {
        "orders": seed.orders,
        "products": seed.products,
        "emails": seed.emails,
        "origin": seed.origin.isoformat(),
        "step_us": seed.step // timedelta(microseconds=1),
        "client_id": str(seed.client_id),
    }
    insert = f"INSERT INTO {SEED_TABLE} (seed) VALUES (%s)"  # noqa: S608 — a constant name
    cursor.execute(insert, [json.dumps(record)])


def _recorded_seed(db: DbUrl) -> Seed | None:
    with db.connect() as conn:
        if conn.execute("SELECT to_regclass(%s)", [SEED_TABLE]).fetchone()[0] is None:
            return None
        row = conn.execute(f"SELECT seed FROM {SEED_TABLE}").fetchone()  # noqa: S608
        if row is None:
            return None
        record = row[0]
        ids = conn.execute(
            "SELECT id FROM catalog_product WHERE sku LIKE 'SCALE-%%' ORDER BY sku"
        ).fetchall()
    return Seed(
        orders=record["orders"],
        products=record["products"],
        emails=record["emails"],
        origin=datetime.fromisoformat(record["origin"]),
        step=timedelta(microseconds=record["step_us"]),
        client_id=uuid.UUID(record["client_id"]),
        product_ids=[row[0] for row in ids],
    )


def _top_up(db: DbUrl, seed: Seed, *, outbox: bool) -> Seed:
    """Orders (and events) from the newest seeded one to now, at the seeded rate."""
    from django.conf import settings

    now = datetime.now(UTC)
    last = (now - seed.origin) // seed.step
    ks = range(seed.orders, last + 1)
    if not ks:
        return seed
    retention = timedelta(seconds=settings.OUTBOX_RETENTION)
    with db.connect(autocommit=False) as conn, conn.cursor() as cursor:
        events = _copy_orders(cursor, seed, ks, now - retention if outbox else now + SPAN)
        topped = replace(seed, orders=last + 1)
        _record_seed(cursor, topped)
        conn.commit()
    log(f"{db.name}: topped up {len(ks)} orders ({events} events) up to now")
    _vacuum(db)
    return topped


def _vacuum(db: DbUrl) -> None:
    started = time.perf_counter()
    with db.connect() as conn:
        conn.execute(
            "VACUUM ANALYZE catalog_product, orders_order, orders_orderitem, outbox_outboxevent"
        )
    log(f"{db.name}: VACUUM ANALYZE in {time.perf_counter() - started:.1f} s")


# --- the two databases and what their pages need ------------------------------------------


@dataclass
class Target:
    """One seeded database, its logged-in staff client and API key, and the values its pages
    look up (an order id, a deep cursor, a product)."""

    label: str
    db: DbUrl
    orders: int = 0
    staff: Any = None
    api: Any = None
    api_key: str = ""
    order_id: str = ""
    deep_cursor: str = ""
    product_id: str = ""
    sku: str = ""
    connection: Any = None


def _connect(target: Target) -> None:
    """A Django connection of its own to the target's database (opened on first use)."""
    from django.db import connections
    from django.db.utils import load_backend

    settings_dict = {
        **connections.settings["default"],
        "NAME": target.db.name,
        "HOST": target.db.host,
        "PORT": target.db.port,
        "USER": target.db.user,
        "PASSWORD": target.db.password,
    }
    backend = load_backend(settings_dict["ENGINE"])
    target.connection = backend.DatabaseWrapper(settings_dict, "default")


def use(target: Target) -> None:
    """Make the target's connection Django's default one. Both stay open (a pointer swap,
    not a reconnect), so the two sizes alternate request by request on warm connections."""
    from django.db import connections

    connections._connections.default = target.connection


def _prepare(target: Target, seed: Seed) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from clients.services import api_client_rotate_key
    from orders.models import Order

    use(target)
    user = get_user_model().objects.create_superuser(
        username=f"scale-{uuid.uuid4().hex[:8]}", email="staff@example.com", password=None
    )
    target.staff = Client()
    target.staff.force_login(user)
    # Only a key's hash is stored: each run gives the seeded client a new key.
    target.api_key = api_client_rotate_key(client_id=seed.client_id)
    target.api = Client()
    mine = Order.objects.filter(client_id=seed.client_id).order_by("-created_at", "-id")
    target.orders = mine.count()
    middle = mine.values_list("created_at", flat=True)[target.orders // 2]
    target.deep_cursor = base64.b64encode(urlencode({"p": str(middle)}).encode()).decode()
    target.order_id = str(mine.values_list("id", flat=True)[target.orders // 3])
    target.product_id = str(seed.product_ids[7 % len(seed.product_ids)])
    target.sku = f"SCALE-{7 % len(seed.product_ids):07d}"


# --- the pages -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    name: str
    kind: str  # "admin", "api" or "task" (a background job, timed like a page)
    request: Callable[[Target], Any]  # makes the request, returns the response
    expect: int | None = 200


Path_ = str | Callable[[Target], str]


def _admin_get(path: Path_) -> Callable[[Target], Any]:
    return lambda t: t.staff.get(path(t) if callable(path) else path)


def _api_get(path: Path_) -> Callable[[Target], Any]:
    return lambda t: t.api.get(path(t) if callable(path) else path, HTTP_X_API_KEY=t.api_key)


def _api_post_order(t: Target) -> Any:
    body = {
        "email": f"scale-{uuid.uuid4().hex[:12]}@example.com",
        "items": [{"product_id": t.product_id, "quantity": 1}],
    }
    return t.api.post(
        "/api/v1/orders/",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_X_API_KEY=t.api_key,
        HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
    )


def _refresh_rollups(_: Target | None = None) -> None:
    """What beat runs every minute: the operations page's hourly rollup of closed hours."""
    from orders.rollups import order_hour_rollups_refresh

    order_hour_rollups_refresh()


ORDERS_ADMIN = "/admin/orders/order/"
PAGES = (
    Page("admin changelist", "admin", _admin_get(ORDERS_ADMIN)),
    Page("admin ?status__exact=paid", "admin", _admin_get(ORDERS_ADMIN + "?status__exact=paid")),
    Page("admin ?q=<email>", "admin", _admin_get(f"{ORDERS_ADMIN}?q={SEARCHED_EMAIL}")),
    Page("admin ?q=<order id>", "admin", _admin_get(lambda t: f"{ORDERS_ADMIN}?q={t.order_id}")),
    Page("admin operations page", "admin", _admin_get("/admin/operations/")),
    Page("admin products", "admin", _admin_get("/admin/catalog/product/")),
    Page("admin outbox events", "admin", _admin_get("/admin/outbox/outboxevent/")),
    Page("API orders, first page", "api", _api_get("/api/v1/orders/")),
    Page(
        "API orders, deep cursor",
        "api",
        _api_get(lambda t: f"/api/v1/orders/?cursor={t.deep_cursor}"),
    ),
    Page("API orders ?status=paid", "api", _api_get("/api/v1/orders/?status=paid")),
    Page("API orders ?email=", "api", _api_get(f"/api/v1/orders/?email={SEARCHED_EMAIL}")),
    Page(
        "API products ?search=<sku>", "api", _api_get(lambda t: f"/api/v1/products/?search={t.sku}")
    ),
    Page("API POST order", "api", _api_post_order, expect=201),
    Page("rollup refresh (beat, 1/min)", "task", _refresh_rollups, expect=None),
)


# --- measuring -----------------------------------------------------------------------------


def _call(page: Page, target: Target) -> float:
    """One request of the page (ms), checking its status."""
    started = time.perf_counter()
    response = page.request(target)
    elapsed = (time.perf_counter() - started) * 1000
    if page.expect is not None and response.status_code != page.expect:
        raise RuntimeError(
            f"{page.name} on {target.db.name}: {response.status_code} {response.content[:300]!r}"
        )
    return elapsed


def _measure(page: Page, targets: list[Target], *, requests: int) -> dict:
    """Timings (ms) per target label, alternating between the targets request by request
    (so a busy moment of the machine hits both sizes alike)."""
    for target in targets:
        use(target)
        _refresh_rollups()  # as beat would have, before staff look
        for _ in range(2):  # warm-up: caches, first-request imports, plans
            _call(page, target)
    samples: dict[str, list[float]] = {t.label: [] for t in targets}
    for number in range(requests):
        for target in targets if number % 2 == 0 else targets[::-1]:
            use(target)
            samples[target.label].append(_call(page, target))
    return samples


Query = tuple[float, str, Any]  # (ms, sql, params)


def _queries_of(page: Page, target: Target) -> list[Query]:
    """Every statement one request of the page sends."""
    from django.db import connection

    queries: list[Query] = []

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            queries.append(((time.perf_counter() - started) * 1000, sql, params))

    use(target)
    _refresh_rollups()
    with connection.execute_wrapper(timed):
        _call(page, target)
    return queries


# Statements of the login machinery, not of the page's data.
NOT_DATA = ('"django_session"', '"auth_user"', '"auth_', '"django_content_type"', '"axes_')


def _data_reads(queries: list[Query]) -> list[Query]:
    return [
        query
        for query in queries
        if query[1].lstrip().upper().startswith("SELECT")
        and not any(name in query[1] for name in NOT_DATA)
    ]


def _explain(sql: str, params: Any, options: str) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN ({options}) {sql}", params)
        return [row[0] for row in cursor.fetchall()]


# --- reporting -----------------------------------------------------------------------------


def _row(page: Page, samples: dict, queries: dict, targets: list[Target]) -> dict:
    small, large = (samples[t.label] for t in targets)
    p50 = [statistics.median(small), statistics.median(large)]
    return {
        "page": page.name,
        "kind": page.kind,
        "queries": [queries[t.label] for t in targets],
        "p50_ms": p50,
        "min_ms": [min(small), min(large)],
        "samples": [len(small), len(large)],
        "ratio": p50[1] / p50[0] if p50[0] else None,
        "ratio_min": min(large) / min(small) if min(small) else None,
    }


def _print_table(rows: list[dict], targets: list[Target]) -> None:
    small, large = (f"{t.orders:,} orders" for t in targets)
    print(
        f"\n{'page':<30} {'queries':>9} {small + ' p50':>20} {large + ' p50':>22} "
        f"{'ratio':>6} {'(min)':>6}  goal: ratio <= {GOAL}"
    )
    for row in rows:
        ratio = row["ratio"]
        verdict = "background" if row["kind"] == "task" else ("ok" if ratio <= GOAL else "OVER")
        queries = "/".join(str(n) for n in row["queries"])
        print(
            f"{row['page']:<30} {queries:>9} {row['p50_ms'][0]:>17.1f} ms "
            f"{row['p50_ms'][1]:>19.1f} ms {ratio:>6.2f} {row['ratio_min']:>6.2f}  {verdict}"
        )
    print(flush=True)


def _explain_pages(targets: list[Target], path: Path, *, only: str = "") -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of every data query of every admin page at both sizes into
    `path`; the slowest query of each at the large size, shorter, on stdout."""
    lines = [
        f"# EXPLAIN (ANALYZE, BUFFERS) of the admin pages' queries: bench/seed_scale.py, "
        f"{utc_stamp()}, git {git_revision()}, PostgreSQL on {core_count()} cores",
        "# Each query as one request of the page sent it (ms = its time inside that request).",
    ]
    for page in (p for p in PAGES if p.kind == "admin" and only in p.name):
        for target in targets:
            reads = _data_reads(_queries_of(page, target))
            lines.append(f"\n## {page.name}: {target.orders:,} orders ({target.db.name})")
            for ms, sql, params in reads:
                lines.append(f"\n-- {ms:.1f} ms in the page: {sql}")
                lines.extend(_explain(sql, params, "ANALYZE, BUFFERS"))
            if target is targets[-1] and reads:
                ms, sql, params = max(reads, key=lambda q: q[0])
                print(f"{page.name} at {target.orders:,} orders, slowest: {ms:.1f} ms {sql[:200]}")
                for line in _explain(sql, params, "ANALYZE, COSTS OFF, TIMING OFF"):
                    print(f"      {line}")
    path.write_text("\n".join(lines) + "\n")
    log(f"EXPLAIN of every admin query written to {shown_path(path)}")


# --- main ----------------------------------------------------------------------------------


def _with_name(db: DbUrl, name: str) -> str:
    from urllib.parse import quote

    password = f":{quote(db.password, safe='')}" if db.password else ""
    return f"postgres://{quote(db.user, safe='')}{password}@{db.host}:{db.port}/{name}"


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_args(
        parser,
        database_env="SCALEBENCH_DATABASE_URL",
        database_default="postgres://postgres@127.0.0.1:5432/orders_scale",
    )
    parser.add_argument("--baseline-database-url", help="default: <large name>_baseline")
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--baseline-orders", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=40, help="timed requests per page/size")
    parser.add_argument("--no-outbox", action="store_true", help="seed no outbox events")
    parser.add_argument("--only", default="", help="measure only the pages whose name has this")
    parser.add_argument("--smoke", action="store_true", help="CI size: 2 000 vs 200 orders")
    parser.add_argument(
        "--skip-seed", action="store_true", help="reuse the seeded databases (topped up to now)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.orders, args.baseline_orders, args.requests = 2_000, 200, 3
    return args


def _targets(args: argparse.Namespace, env: dict[str, str]) -> list[Target] | None:
    large = DbUrl.parse(args.database_url, default_name="orders_scale")
    small_url = args.baseline_database_url or _with_name(large, f"{large.name}_baseline")
    small = DbUrl.parse(small_url, default_name="orders_scale_baseline")
    for db in (small, large):
        if not create_and_migrate(db, {**env, "DATABASE_URL": db.url}, marker=MARKER, log=log):
            log(f"{db.name} was not created by this script: refusing to replace its orders")
            return None
    return [Target("small", small), Target("large", large)]


def _seeded(target: Target, *, orders: int, args: argparse.Namespace) -> None:
    _connect(target)
    use(target)
    seed = _recorded_seed(target.db) if args.skip_seed else None
    if seed is None:
        log(f"{target.db.name}: seeding {orders} orders")
        _seed(target.db, orders=orders, outbox=not args.no_outbox)
        seed = _recorded_seed(target.db)
        assert seed is not None
    else:
        seed = _top_up(target.db, seed, outbox=not args.no_outbox)
    _prepare(target, seed)


def main() -> int:
    args = _parse_args()
    env = _environment(args)
    targets = _targets(args, env)
    if targets is None:
        return 2
    os.environ.update(env)
    import django

    django.setup()
    for target, orders in zip(targets, (args.baseline_orders, args.orders), strict=True):
        _seeded(target, orders=orders, args=args)
    rows = []
    for page in (p for p in PAGES if args.only in p.name):
        samples = _measure(page, targets, requests=args.requests)
        queries = {t.label: len(_queries_of(page, t)) for t in targets}
        rows.append(_row(page, samples, queries, targets))
        log(f"measured {page.name}")
    _print_table(rows, targets)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    _explain_pages(targets, RESULTS_DIR / "admin_scale_explain.txt", only=args.only)
    result = RESULTS_DIR / f"scale-{utc_stamp()}.json"
    write_json(result, {"git": git_revision(), "cores": core_count(), "goal": GOAL,
                        "sizes": [t.orders for t in targets],
                        "databases": [t.db.name for t in targets], "rows": rows})  # fmt: skip
    _print_table(rows, targets)
    log(f"results in {shown_path(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
