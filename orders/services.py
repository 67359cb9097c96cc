"""Writes of the orders app: API clients, order creation and the status state machine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Protocol
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from catalog.errors import InsufficientStock
from catalog.selectors import product_snapshots
from catalog.services import stock_release, stock_reserve, stock_take_in
from clients.models import ApiClient
from core.problems import ValidationFailed
from core.unit_of_work import UnitOfWork
from orders import metrics
from orders.errors import OrderNotCancellable
from orders.events import (
    order_cancelled_event,
    order_created_event,
    order_paid_event,
    order_refunded_event,
)
from orders.history import (
    PAYMENT_PROVIDER,
    SYSTEM,
    StatusActor,
    cancel_actor_for_reason,
    status_change_record,
    status_change_row,
)
from orders.locks import lock_order
from orders.models import (
    ALLOWED_TRANSITIONS,
    CancelReason,
    Order,
    OrderItem,
    OrderStatus,
)
from outbox.services import EventEnvelope, outbox_enqueue, outbox_enqueue_in
from outbox.subscribers import dispatch_in_transaction, dispatch_in_unit_of_work

# --- Orders ------------------------------------------------------------------------------


# The largest amount Order.total / OrderItem.line_total (NUMERIC(12,2)) can store.
MAX_ORDER_TOTAL = Decimal("9999999999.99")


@dataclass(frozen=True)
class OrderLine:
    product_id: UUID
    quantity: int


def order_create(*, client: ApiClient, email: str, lines: Sequence[OrderLine]) -> Order:
    """Reserve stock for every line and create the order with price snapshots, atomically.

    Raises ProductUnavailable or InsufficientStock with nothing reserved. The caller has
    validated the lines (1–50, quantities 1–1000, each product once). The order comes back
    as order_get would read it, its items loaded (by sku) without a query.
    """
    quantities = {line.product_id: line.quantity for line in lines}
    with transaction.atomic():
        try:
            products = stock_reserve(quantities=quantities)
        except InsufficientStock:
            metrics.STOCK_CONFLICTS.inc()
            raise
        order, items = _new_order(
            client=client, email=email, quantities=quantities, products=products
        )
        order.save(force_insert=True)
        # In product-pk order, like the product locks: each INSERT's foreign-key check takes
        # KEY SHARE on its product, so concurrent orders meet their products in one order.
        OrderItem.objects.bulk_create(sorted(items, key=lambda item: item.product_id))
        _items_as_read(order=order, items=items)
        status_change_record(order=order, old_status="", actor=StatusActor.for_client(client))
        _emit_in_transaction(order_created_event(order=order, items=items))
    return order


def order_create_in(
    *, work: UnitOfWork, client: ApiClient, email: str, lines: Sequence[OrderLine]
) -> Order | None:
    """order_create as one unit of work: the order's rows, its event (and what other apps
    add to it), then the product locks and the guarded stock update, sent in one round trip
    by the caller's `work.commit()`.

    The prices, names and skus come from an unlocked read; the stock guard refuses the work
    (WorkRefused(catalog.services.STOCK_TAKE)) if any of them, or the stock, no longer holds
    under the lock. Returns None, adding nothing, when the read already shows a refusal
    (an unknown, inactive or short product): order_create decides those with the locks held
    and words the refusal. Same preconditions and result as order_create.
    """
    quantities = {line.product_id: line.quantity for line in lines}
    products = product_snapshots(product_ids=quantities)
    if not all(
        product_id in products
        and products[product_id].is_active
        and products[product_id].stock >= quantity
        for product_id, quantity in quantities.items()
    ):
        return None
    order, items = _new_order(client=client, email=email, quantities=quantities, products=products)
    work.insert("orders.order", [order])
    items_by_product: list[OrderItem] = sorted(items, key=lambda item: item.product_id)
    work.insert("orders.items", items_by_product)
    actor = StatusActor.for_client(client)
    work.insert(
        "orders.status_change", [status_change_row(order=order, old_status="", actor=actor)]
    )
    stock_take_in(work=work, quantities=quantities, expected=products)
    event = order_created_event(order=order, items=items)
    outbox_enqueue_in(work=work, event=event)
    dispatch_in_unit_of_work(event=event, work=work)
    _items_as_read(order=order, items=items)
    return order


class _PricedProduct(Protocol):
    @property
    def sku(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def price(self) -> Decimal: ...


def _new_order(
    *,
    client: ApiClient,
    email: str,
    quantities: dict[UUID, int],
    products: Mapping[UUID, _PricedProduct],
) -> tuple[Order, list[OrderItem]]:
    """The unsaved order and its items, with the products' sku, name and price as snapshots.

    Raises ValidationFailed when the total does not fit NUMERIC(12,2).
    """
    items = [
        OrderItem(
            product_id=product_id,
            sku=products[product_id].sku,
            name=products[product_id].name,
            unit_price=products[product_id].price,
            quantity=quantity,
            line_total=products[product_id].price * quantity,
        )
        for product_id, quantity in quantities.items()
    ]
    total = sum((item.line_total for item in items), Decimal("0.00"))
    if total > MAX_ORDER_TOTAL:
        # Every field was valid, but NUMERIC(12,2) cannot hold the sum: refuse it as bad
        # input (rolling back the reservation) instead of failing the INSERT with a 500.
        message = f"The order total may not exceed {MAX_ORDER_TOTAL}."
        raise ValidationFailed([{"field": "items", "message": message}])
    order = Order(
        client=client,
        email=email,
        status=OrderStatus.PENDING_PAYMENT,
        total=total,
        currency=settings.SHOP_CURRENCY,
        expires_at=timezone.now() + timedelta(seconds=settings.ORDER_PAYMENT_TIMEOUT),
        event_version=1,
    )
    for item in items:
        item.order = order
    return order, items


def _items_as_read(*, order: Order, items: Sequence[OrderItem]) -> None:
    """Make `order.items.all()` the items just inserted, in sku order, without a query.

    The order is then what orders.selectors.order_get would read back (its items
    prefetched, ordered by sku), so the API renders the 201 from memory. Python's sort is
    by code point, PostgreSQL's ORDER BY sku too under the database's C.UTF-8 collation.
    Done as prefetch_related fills its cache.
    """
    loaded = order.items.all()  # lazy: no query
    loaded._result_cache = sorted(items, key=lambda item: item.sku)
    loaded._prefetch_done = True  # type: ignore[attr-defined]
    order._prefetched_objects_cache = {"items": loaded}  # type: ignore[attr-defined]


def order_cancel(
    *,
    order_id: UUID,
    reason: CancelReason,
    client: ApiClient | None = None,
    actor: StatusActor | None = None,
) -> Order:
    """Cancel a pending order and give its units back; idempotent for cancelled orders.

    With `client`, only that client's order is found. `actor` (who cancels, for the status
    history) defaults to the one `reason` implies. Raises OrderNotFound or
    OrderNotCancellable (paid).
    """
    actor = actor or cancel_actor_for_reason(reason=reason, client=client)
    with transaction.atomic():
        order = lock_order(order_id=order_id, client=client)
        if order.status == OrderStatus.CANCELLED:
            return order
        if order.status != OrderStatus.PENDING_PAYMENT:
            raise OrderNotCancellable(order.status)
        order = _order_transition(order=order, to=OrderStatus.CANCELLED, actor=actor, reason=reason)
        stock_release(quantities={item.product_id: item.quantity for item in order.items.all()})
        _emit_in_transaction(order_cancelled_event(order=order))
    return order


def order_mark_paid(*, order_id: UUID, actor: StatusActor = PAYMENT_PROVIDER) -> Order:
    """Move a pending order to `paid`. Raises OrderNotCancellable-style conflicts as
    `InvalidTransition` when the order is no longer pending (e.g. cancelled meanwhile)."""
    with transaction.atomic():
        order = lock_order(order_id=order_id)
        if order.status == OrderStatus.PAID:
            return order
        order = _order_transition(order=order, to=OrderStatus.PAID, actor=actor)
        _emit_in_transaction(order_paid_event(order=order))
    return order


def order_mark_refunded(*, order_id: UUID, actor: StatusActor = PAYMENT_PROVIDER) -> Order:
    """Move a paid order to `refunded`: the provider refunded its succeeded payment.

    No stock comes back (the goods may have shipped; staff restock in the admin).
    Idempotent for refunded orders; raises InvalidTransition from any other status.
    """
    with transaction.atomic():
        order = lock_order(order_id=order_id)
        if order.status == OrderStatus.REFUNDED:
            return order
        order = _order_transition(order=order, to=OrderStatus.REFUNDED, actor=actor)
        _emit_in_transaction(order_refunded_event(order=order))
    return order


def _emit_in_transaction(event: EventEnvelope) -> None:
    """Record `event` in the outbox and run other apps' reactions to it (payments owes, stops
    or refunds a payment) right here: in the caller's transaction, under its locks."""
    outbox_enqueue(event=event)
    dispatch_in_transaction(event=event)


class InvalidTransition(Exception):
    def __init__(self, order_id: UUID, current: str, target: str) -> None:
        super().__init__(f"order {order_id}: {current} -> {target} is not allowed")
        self.current = current
        self.target = target


def _order_transition(
    *, order: Order, to: OrderStatus, actor: StatusActor, reason: CancelReason | None = None
) -> Order:
    """The one place an order's status changes: a conditional UPDATE on the expected status,
    and its row in the status history (same transaction: the caller's atomic block).

    The row count decides who won a race; the event version is bumped in the same UPDATE,
    so it is assigned under the order's row lock. Returns the order as stored.
    """
    if to not in ALLOWED_TRANSITIONS[order.status]:
        raise InvalidTransition(order.pk, order.status, to)
    now = timezone.now()
    changes: dict = {"status": to, "updated_at": now, "event_version": F("event_version") + 1}
    if to == OrderStatus.CANCELLED:
        changes.update(cancel_reason=reason, cancelled_at=now)
    elif to == OrderStatus.PAID:
        changes.update(paid_at=now)
    won = Order.objects.filter(pk=order.pk, status=order.status).update(**changes)
    if won != 1:
        current = Order.objects.filter(pk=order.pk).values_list("status", flat=True).first()
        raise InvalidTransition(order.pk, current or "missing", to)
    metrics.ORDER_TRANSITIONS.labels(from_status=order.status, to_status=to).inc()
    old_status = order.status
    order.refresh_from_db()
    status_change_record(order=order, old_status=old_status, actor=actor)
    return order


def order_expire_overdue(*, limit: int = 200, actor: StatusActor = SYSTEM) -> int:
    """Cancel pending orders whose payment deadline passed (`payment_expired`).

    Each order is cancelled in its own transaction through order_cancel, whose locked
    status check makes a concurrent payment win or lose cleanly. Returns how many expired.
    """
    overdue = list(
        Order.objects.filter(
            status=OrderStatus.PENDING_PAYMENT, expires_at__lt=timezone.now()
        ).values_list("pk", flat=True)[:limit]
    )
    expired = 0
    for order_id in overdue:
        try:
            order = order_cancel(
                order_id=order_id, reason=CancelReason.PAYMENT_EXPIRED, actor=actor
            )
        except OrderNotCancellable:
            continue  # paid just in time
        if order.cancel_reason == CancelReason.PAYMENT_EXPIRED:
            expired += 1
            metrics.ORDERS_EXPIRED.inc()
    return expired
