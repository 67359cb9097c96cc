"""Order services and the stock reservation they rely on, below the HTTP layer."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from catalog.errors import InsufficientStock, ProductUnavailable
from catalog.models import Product
from catalog.services import stock_release, stock_reserve
from orders.errors import OrderNotCancellable, OrderNotFound
from orders.history import StatusActor
from orders.models import CancelReason, Order, OrderStatus
from orders.services import (
    InvalidTransition,
    OrderLine,
    _order_transition,
    order_cancel,
    order_create,
    order_mark_paid,
)
from outbox.models import OutboxEvent
from tests.factories import make_api_client, make_product
from tests.orders.helpers import Snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_row():
    return make_api_client()[0]


def _events(order: Order) -> list[tuple[str, int]]:
    return list(
        OutboxEvent.objects.filter(aggregate_id=str(order.pk))
        .order_by("version")
        .values_list("type", "version")
    )


def _for_update_selects(queries) -> list[str]:
    return [q["sql"] for q in queries if re.search(r"FOR (NO KEY )?UPDATE", q["sql"])]


# --- lock order --------------------------------------------------------------------------


def test_stock_reserve_locks_products_in_pk_order_in_one_statement():
    # given products whose pks sort differently from the order of the lines
    products = [make_product(stock=5) for _ in range(4)]
    lines = {p.pk: 1 for p in sorted(products, key=lambda p: str(p.pk), reverse=True)}

    # when stock is reserved
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        stock_reserve(quantities=lines)

    # then one SELECT ... ORDER BY id ASC ... FOR NO KEY UPDATE took every lock, before any
    # UPDATE (NO KEY: stock touches no key, so item INSERTs' KEY SHARE checks never wait)
    locking = _for_update_selects(captured.captured_queries)
    assert len(locking) == 1
    sql = locking[0]
    assert re.search(r'ORDER BY "catalog_product"\."id" ASC', sql), sql
    assert sql.rstrip().endswith("FOR NO KEY UPDATE"), sql
    statements = [q["sql"] for q in captured.captured_queries]
    first_update = next(i for i, s in enumerate(statements) if s.startswith("UPDATE"))
    assert statements.index(sql) < first_update
    # and the stock changed with one relative UPDATE, not a read-modify-write
    updates = [s for s in statements if s.startswith('UPDATE "catalog_product"')]
    assert len(updates) == 1
    assert '"catalog_product"."stock" +' in updates[0] or '"stock" +' in updates[0]


def test_stock_release_locks_products_in_pk_order():
    products = [make_product(stock=5) for _ in range(3)]
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        stock_release(quantities={p.pk: 2 for p in reversed(products)})
    locking = _for_update_selects(captured.captured_queries)
    assert len(locking) == 1
    assert re.search(r'ORDER BY "catalog_product"\."id" ASC', locking[0])
    assert sorted(Product.objects.values_list("stock", flat=True)) == [7, 7, 7]


def test_cancel_locks_the_order_before_its_products(client_row):
    # given a pending order
    product = make_product(stock=5)
    order = order_create(client=client_row, email="a@example.com", lines=[OrderLine(product.pk, 2)])

    # when it is cancelled
    with CaptureQueriesContext(connection) as captured:
        order_cancel(order_id=order.pk, reason=CancelReason.CUSTOMER_REQUESTED)

    # then the order row is locked first, then the products (the service's global lock order)
    locking = _for_update_selects(captured.captured_queries)
    assert len(locking) == 2
    assert 'FROM "orders_order"' in locking[0]
    assert 'FROM "catalog_product"' in locking[1]


# --- reserve: all or nothing -------------------------------------------------------------


def test_stock_reserve_is_all_or_nothing():
    # given one line that fits and one that does not
    ok = make_product(stock=5)
    short = make_product(stock=1)

    # when both are reserved
    with pytest.raises(InsufficientStock) as refused, transaction.atomic():
        stock_reserve(quantities={ok.pk: 5, short.pk: 2})

    # then nothing is taken, and the refusal names the short line only
    assert Product.objects.get(pk=ok.pk).stock == 5
    assert Product.objects.get(pk=short.pk).stock == 1
    assert refused.value.extra["products"] == [
        {"product_id": str(short.pk), "requested": 2, "available": 1}
    ]


def test_stock_reserve_refuses_unknown_and_inactive_products():
    inactive = make_product(is_active=False)
    unknown = uuid.uuid4()
    with pytest.raises(ProductUnavailable) as refused, transaction.atomic():
        stock_reserve(quantities={inactive.pk: 1, unknown: 1})
    assert sorted(refused.value.extra["product_ids"]) == sorted([str(inactive.pk), str(unknown)])
    assert Product.objects.get(pk=inactive.pk).stock == 10


def test_the_database_refuses_negative_stock():
    # the CHECK constraint is the last line of defence behind the locks
    product = make_product(stock=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.filter(pk=product.pk).update(stock=-1)


# --- create ------------------------------------------------------------------------------


def test_order_create_snapshots_and_totals(client_row):
    a = make_product(price=Decimal("0.10"), stock=10)
    b = make_product(price=Decimal("999.99"), stock=10)

    order = order_create(
        client=client_row,
        email="a@example.com",
        lines=[OrderLine(b.pk, 3), OrderLine(a.pk, 7)],
    )

    assert order.status == OrderStatus.PENDING_PAYMENT
    assert order.total == Decimal("3000.67")  # 3 × 999.99 + 7 × 0.10
    assert order.expires_at > order.created_at
    assert {(i.product_id, i.quantity, i.line_total) for i in order.items.all()} == {
        (a.pk, 7, Decimal("0.70")),
        (b.pk, 3, Decimal("2999.97")),
    }
    assert _events(order) == [("order.created", 1)]
    assert (Product.objects.get(pk=a.pk).stock, Product.objects.get(pk=b.pk).stock) == (3, 7)


def test_order_create_refusal_leaves_nothing(client_row):
    product = make_product(stock=1)
    before = Snapshot.take()
    with pytest.raises(InsufficientStock):
        order_create(client=client_row, email="a@example.com", lines=[OrderLine(product.pk, 2)])
    assert Snapshot.take() == before


# --- state machine -----------------------------------------------------------------------


def test_cancel_is_idempotent_and_restores_stock_once(client_row):
    product = make_product(stock=5)
    order = order_create(client=client_row, email="a@example.com", lines=[OrderLine(product.pk, 3)])

    first = order_cancel(order_id=order.pk, reason=CancelReason.STAFF_CANCELLED)
    again = order_cancel(order_id=order.pk, reason=CancelReason.CUSTOMER_REQUESTED)

    assert first.status == again.status == OrderStatus.CANCELLED
    assert again.cancel_reason == CancelReason.STAFF_CANCELLED  # the first reason stays
    assert Product.objects.get(pk=product.pk).stock == 5
    assert _events(order) == [("order.created", 1), ("order.cancelled", 2)]


def test_cancel_of_a_paid_order_is_refused(client_row):
    product = make_product(stock=5)
    order = order_create(client=client_row, email="a@example.com", lines=[OrderLine(product.pk, 3)])
    order_mark_paid(order_id=order.pk)

    with pytest.raises(OrderNotCancellable):
        order_cancel(order_id=order.pk, reason=CancelReason.CUSTOMER_REQUESTED)

    assert Order.objects.get(pk=order.pk).status == OrderStatus.PAID
    assert Product.objects.get(pk=product.pk).stock == 2


def test_cancel_scoped_to_a_client_does_not_find_other_clients_orders(client_row):
    other, _ = make_api_client()
    order = order_create(
        client=client_row, email="a@example.com", lines=[OrderLine(make_product().pk, 1)]
    )
    with pytest.raises(OrderNotFound):
        order_cancel(order_id=order.pk, client=other, reason=CancelReason.CUSTOMER_REQUESTED)
    assert Order.objects.get(pk=order.pk).status == OrderStatus.PENDING_PAYMENT


def test_mark_paid_is_idempotent_and_final(client_row):
    order = order_create(
        client=client_row, email="a@example.com", lines=[OrderLine(make_product().pk, 1)]
    )

    paid = order_mark_paid(order_id=order.pk)
    again = order_mark_paid(order_id=order.pk)

    assert paid.status == again.status == OrderStatus.PAID
    assert again.paid_at == paid.paid_at
    assert _events(order) == [("order.created", 1), ("order.paid", 2)]


def test_mark_paid_of_a_cancelled_order_is_an_invalid_transition(client_row):
    order = order_create(
        client=client_row, email="a@example.com", lines=[OrderLine(make_product().pk, 1)]
    )
    order_cancel(order_id=order.pk, reason=CancelReason.PAYMENT_EXPIRED)

    with pytest.raises(InvalidTransition):
        order_mark_paid(order_id=order.pk)

    assert Order.objects.get(pk=order.pk).status == OrderStatus.CANCELLED
    assert _events(order) == [("order.created", 1), ("order.cancelled", 2)]


def test_transition_is_a_conditional_update_that_a_stale_copy_loses(client_row):
    # given a copy of a pending order read before someone else paid it
    order = order_create(
        client=client_row, email="a@example.com", lines=[OrderLine(make_product().pk, 1)]
    )
    stale = Order.objects.get(pk=order.pk)
    order_mark_paid(order_id=order.pk)

    # when the stale copy tries its own transition
    with pytest.raises(InvalidTransition) as lost, transaction.atomic():
        _order_transition(
            order=stale,
            to=OrderStatus.CANCELLED,
            actor=StatusActor.for_client(client_row),
            reason=CancelReason.CUSTOMER_REQUESTED,
        )

    # then the row count said no, and the stored order is untouched
    assert lost.value.current == OrderStatus.PAID
    stored = Order.objects.get(pk=order.pk)
    assert (stored.status, stored.cancel_reason, stored.event_version) == (OrderStatus.PAID, "", 2)
