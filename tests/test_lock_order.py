"""The global lock order, order -> products (by pk) -> payment (orders/locks.py
`lock_order`), asserted on the SQL each path runs: create, API cancel, admin cancel,
expiry, and the success, failure and refund webhooks.

Each test records the statements a path sends inside its transaction and reduces them to
the row locks they take, (table, lock kind) in order: `SELECT … FOR [NO KEY] UPDATE` and
`UPDATE`/`DELETE` of orders_order, catalog_product and payments_payment. How payments
locks its row (a locking SELECT or the UPDATE itself) is its own business; which row a
path locks first, second and third is not.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from catalog.models import Product
from clients.models import ApiClient
from core.unit_of_work import UNIT_OF_WORK_SEPARATOR
from orders.models import CancelReason, Order, OrderStatus
from orders.services import OrderLine, order_create, order_expire_overdue
from payments.models import Payment, PaymentStatus
from tests.admin_helpers import logged_in, make_staff
from tests.factories import make_api_client, make_product
from tests.payments.helpers import (
    WEBHOOK_PATH,
    WEBHOOK_SECRET,
    as_django_headers,
    signed_headers,
    unique_email,
    webhook_event,
)

pytestmark = pytest.mark.django_db(transaction=True)

ORDER, PRODUCTS, PAYMENT = "orders_order", "catalog_product", "payments_payment"
GLOBAL_LOCK_ORDER = (ORDER, PRODUCTS, PAYMENT)


# --- the helper: row locks out of captured SQL -------------------------------------------


@dataclass(frozen=True)
class Statement:
    sql: str
    params: Any
    in_transaction: bool


@dataclass(frozen=True)
class RowLock:
    table: str
    kind: str  # "FOR UPDATE", "FOR NO KEY UPDATE", "FOR SHARE", ..., "UPDATE", "DELETE"
    statement: Statement = field(repr=False)

    @property
    def in_pk_order(self) -> bool:
        return re.search(rf'ORDER BY "?{self.table}"?\."?id"? ASC', self.statement.sql) is not None

    def names(self, row_id: uuid.UUID) -> bool:
        params = self.statement.params or ()
        values = list(params.values() if isinstance(params, dict) else params)
        return row_id in values or str(row_id) in values


_LOCKING_SELECT = re.compile(
    r'\bFROM\s+"?(?P<table>\w+)"?.*'
    r"\b(?P<kind>FOR\s+(?:NO\s+KEY\s+UPDATE|UPDATE|KEY\s+SHARE|SHARE))\b",
    re.S | re.I,
)
_WRITE = re.compile(r'^\s*(?P<kind>UPDATE|DELETE\s+FROM)\s+"?(?P<table>\w+)"?', re.I)


@contextmanager
def sql_of_the_path() -> Iterator[list[Statement]]:
    """Every statement the block sends on this thread's connection, with its params and
    whether it ran inside a transaction."""
    statements: list[Statement] = []

    def record(execute, sql, params, many, context):
        parts = sql.split(UNIT_OF_WORK_SEPARATOR)
        # A unit of work (core/unit_of_work.py) sends its statements as one string, which
        # PostgreSQL runs as one implicit transaction: each part counts as in a transaction.
        in_transaction = connection.in_atomic_block or len(parts) > 1
        statements.extend(Statement(part, params, in_transaction) for part in parts)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield statements


def row_locks(statements: list[Statement]) -> list[RowLock]:
    """(table, lock kind) of each statement that locks rows of the lock-order tables."""
    locks = []
    for statement in statements:
        found = _LOCKING_SELECT.search(statement.sql) or _WRITE.match(statement.sql)
        if found and found["table"] in GLOBAL_LOCK_ORDER:
            kind = " ".join(found["kind"].upper().split()).removesuffix(" FROM")
            locks.append(RowLock(found["table"], kind, statement))
    return locks


def first_locked(locks: list[RowLock]) -> list[str]:
    """The lock-order tables in the order the path first locked a row of each."""
    tables: list[str] = []
    for lock in locks:
        if lock.table not in tables:
            tables.append(lock.table)
    return tables


def assert_never_locks_backwards(locks: list[RowLock], *, order_id: uuid.UUID | None) -> None:
    """Inside the transaction, products locked by one pk-ordered SELECT before any update,
    no product after the payment, and a later write of the order row only of the row held."""
    assert all(lock.statement.in_transaction for lock in locks), locks
    product_locks = [lock for lock in locks if lock.table == PRODUCTS]
    if product_locks:
        assert product_locks[0].kind.startswith("FOR "), product_locks
        selects = [lock for lock in product_locks if lock.kind.startswith("FOR ")]
        assert all(lock.in_pk_order for lock in selects), selects
    tables = [lock.table for lock in locks]
    if PAYMENT in tables:
        assert PRODUCTS not in tables[tables.index(PAYMENT) :], tables
    order_locks = [lock for lock in locks if lock.table == ORDER]
    if order_id is not None:
        assert all(lock.names(order_id) for lock in order_locks), order_locks


# --- givens ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def webhook_secrets(settings):
    settings.PAYMENT_WEBHOOK_SECRETS = [WEBHOOK_SECRET]


@pytest.fixture
def client_and_key() -> tuple[ApiClient, str]:
    return make_api_client()


def two_products() -> list[Product]:
    return [make_product(stock=10, price=Decimal("10.00")) for _ in range(2)]


def pending_order(client: ApiClient, products: list[Product]) -> Order:
    """A pending order of `products`, its payment pending at the provider (cancellable)."""
    order = order_create(
        client=client,
        email=unique_email(),
        lines=[OrderLine(product_id=p.pk, quantity=1) for p in reversed(products)],
    )
    Payment.objects.filter(order_id=order.pk).update(
        status=PaymentStatus.PENDING, provider_payment_id=f"pay_{uuid.uuid4().hex}"
    )
    return order


def provider_payment_id(order: Order) -> str:
    return Payment.objects.values_list("provider_payment_id", flat=True).get(order_id=order.pk)


def send_webhook(event_type: str, *, order: Order) -> Any:
    event = webhook_event(event_type, order=order, payment_id=provider_payment_id(order))
    body = json.dumps(event).encode()
    return Client().post(
        WEBHOOK_PATH,
        data=body,
        content_type="application/json",
        **as_django_headers(signed_headers(body)),
    )


# --- create ------------------------------------------------------------------------------


def test_create_locks_its_products_in_pk_order_only(api, client_and_key):
    # given two products, listed in the request in reverse pk order
    products = sorted(two_products(), key=lambda p: p.pk, reverse=True)
    api.credentials(HTTP_X_API_KEY=client_and_key[1])
    body = {
        "email": unique_email(),
        "items": [{"product_id": str(p.pk), "quantity": 1} for p in products],
    }

    # when the order is created over the API
    with sql_of_the_path() as sql:
        response = api.post(
            "/api/v1/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex
        )

    # then only the products are locked, in pk order: the new order and payment are unseen
    assert response.status_code == 201, response.content
    locks = row_locks(sql)
    assert first_locked(locks) == [PRODUCTS], locks
    assert_never_locks_backwards(locks, order_id=None)


# --- cancels -----------------------------------------------------------------------------


def test_api_cancel_locks_order_then_products_then_payment(api, client_and_key):
    # given a pending order of two products whose payment is pending at the provider
    client, key = client_and_key
    order = pending_order(client, two_products())
    api.credentials(HTTP_X_API_KEY=key)

    # when its client cancels it over the API
    with sql_of_the_path() as sql:
        response = api.post(f"/api/v1/orders/{order.pk}/cancel/")

    # then the order is locked first, then the products by pk, then the payment
    assert response.status_code == 200, response.content
    locks = row_locks(sql)
    assert first_locked(locks) == [ORDER, PRODUCTS, PAYMENT], locks
    assert_never_locks_backwards(locks, order_id=order.pk)
    assert Payment.objects.get(order_id=order.pk).status == PaymentStatus.CANCEL_REQUESTED


def test_admin_cancel_locks_order_then_products_then_payment(client_and_key):
    # given a pending order of two products and a superuser in the admin
    order = pending_order(client_and_key[0], two_products())
    admin = logged_in(make_staff("lock-order-admin", superuser=True))

    # when the admin's cancel action runs on it
    with sql_of_the_path() as sql:
        response = admin.post(
            "/admin/orders/order/",
            {"action": "cancel_orders", "_selected_action": [str(order.pk)]},
        )

    # then the order is locked first, then the products by pk, then the payment
    assert response.status_code == 302, response.content
    assert Order.objects.get(pk=order.pk).cancel_reason == CancelReason.STAFF_CANCELLED
    locks = row_locks(sql)
    assert first_locked(locks) == [ORDER, PRODUCTS, PAYMENT], locks
    assert_never_locks_backwards(locks, order_id=order.pk)


def test_expiry_locks_order_then_products_then_payment(client_and_key):
    # given a pending order of two products whose payment deadline has passed
    order = pending_order(client_and_key[0], two_products())
    Order.objects.filter(pk=order.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    # when the expiry task runs
    with sql_of_the_path() as sql:
        expired = order_expire_overdue()

    # then the order is locked first, then the products by pk, then the payment
    assert expired == 1
    locks = row_locks(sql)
    assert first_locked(locks) == [ORDER, PRODUCTS, PAYMENT], locks
    assert_never_locks_backwards(locks, order_id=order.pk)


# --- webhooks ----------------------------------------------------------------------------


def test_webhook_success_locks_order_then_payment(client_and_key):
    # given a pending order of two products whose payment is pending at the provider
    order = pending_order(client_and_key[0], two_products())

    # when the provider reports the payment succeeded
    with sql_of_the_path() as sql:
        response = send_webhook("payment.succeeded", order=order)

    # then the order is locked first, then the payment (no product is touched)
    assert response.status_code == 200, response.content
    assert Order.objects.get(pk=order.pk).status == OrderStatus.PAID
    locks = row_locks(sql)
    assert first_locked(locks) == [ORDER, PAYMENT], locks
    assert_never_locks_backwards(locks, order_id=order.pk)


def test_webhook_failure_locks_order_then_products_then_payment(client_and_key):
    # given a pending order of two products whose payment is pending at the provider
    products = two_products()
    order = pending_order(client_and_key[0], products)

    # when the provider reports the payment failed (the order is cancelled, stock released)
    with sql_of_the_path() as sql:
        response = send_webhook("payment.failed", order=order)

    # then the order is locked first, then the products by pk, then the payment
    assert response.status_code == 200, response.content
    assert Order.objects.get(pk=order.pk).cancel_reason == CancelReason.PAYMENT_FAILED
    assert sorted(
        Product.objects.filter(pk__in=[p.pk for p in products]).values_list("stock", flat=True)
    ) == [10, 10]
    locks = row_locks(sql)
    assert first_locked(locks) == [ORDER, PRODUCTS, PAYMENT], locks
    assert_never_locks_backwards(locks, order_id=order.pk)


def test_webhook_refund_locks_order_then_payment(client_and_key):
    # given a paid order of two products
    order = pending_order(client_and_key[0], two_products())
    assert send_webhook("payment.succeeded", order=order).status_code == 200

    # when the provider reports the payment refunded
    with sql_of_the_path() as sql:
        response = send_webhook("refund.succeeded", order=order)

    # then the order is locked first, then the payment
    assert response.status_code == 200, response.content
    assert Order.objects.get(pk=order.pk).status == OrderStatus.REFUNDED
    locks = row_locks(sql)
    assert first_locked(locks) == [ORDER, PAYMENT], locks
    assert_never_locks_backwards(locks, order_id=order.pk)
