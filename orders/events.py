"""The events orders emit (SPEC §4), as envelopes for the outbox."""

from __future__ import annotations

from collections.abc import Iterable

from orders.models import Order, OrderItem
from outbox.services import EventEnvelope

AGGREGATE_TYPE = "order"


def _order_summary(order: Order) -> dict:
    return {
        "order_id": str(order.id),
        "client_id": str(order.client_id),
        "email": order.email,
        "status": order.status,
        "total": str(order.total),
        "currency": order.currency,
    }


def order_created_event(*, order: Order, items: Iterable[OrderItem]) -> EventEnvelope:
    payload = _order_summary(order) | {
        "expires_at": order.expires_at.isoformat(),
        "items": [
            {
                "product_id": str(item.product_id),
                "sku": item.sku,
                "quantity": item.quantity,
                "unit_price": str(item.unit_price),
                "line_total": str(item.line_total),
            }
            for item in items
        ],
    }
    return EventEnvelope(
        type="order.created",
        aggregate_type=AGGREGATE_TYPE,
        aggregate_id=str(order.id),
        version=order.event_version,
        payload=payload,
        occurred_at=order.created_at,
    )


def order_cancelled_event(*, order: Order) -> EventEnvelope:
    return EventEnvelope(
        type="order.cancelled",
        aggregate_type=AGGREGATE_TYPE,
        aggregate_id=str(order.id),
        version=order.event_version,
        payload=_order_summary(order) | {"reason": order.cancel_reason},
        occurred_at=order.cancelled_at or order.updated_at,
    )


def order_paid_event(*, order: Order) -> EventEnvelope:
    return EventEnvelope(
        type="order.paid",
        aggregate_type=AGGREGATE_TYPE,
        aggregate_id=str(order.id),
        version=order.event_version,
        payload=_order_summary(order)
        | {"paid_at": order.paid_at.isoformat() if order.paid_at else None},
        occurred_at=order.paid_at or order.updated_at,
    )


def order_refunded_event(*, order: Order) -> EventEnvelope:
    return EventEnvelope(
        type="order.refunded",
        aggregate_type=AGGREGATE_TYPE,
        aggregate_id=str(order.id),
        version=order.event_version,
        payload=_order_summary(order)
        | {
            "paid_at": order.paid_at.isoformat() if order.paid_at else None,
            "refunded_at": order.updated_at.isoformat(),
        },
        occurred_at=order.updated_at,
    )
