"""The events orders emit (SPEC §4), as envelopes for the outbox.

Each payload follows its type's published schema, orders/event_schemas/<type>.v<N>.json, N
being the envelope's schema_version: change a payload only together with a new schema file
and the builder's schema_version (tests/events validate every event the tests publish).
The customer's email travels in order.created only (see the contract's notes on personal
data): its consumers need to reach the customer, later events' consumers have it from there.
"""

from __future__ import annotations

from collections.abc import Iterable

from orders.models import Order, OrderItem
from outbox.services import EventEnvelope

AGGREGATE_TYPE = "order"


def _order_summary(order: Order) -> dict:
    return {
        "order_id": str(order.id),
        "client_id": str(order.client_id),
        "status": order.status,
        "total": str(order.total),
        "currency": order.currency,
    }


def order_created_event(*, order: Order, items: Iterable[OrderItem]) -> EventEnvelope:
    payload = _order_summary(order) | {
        "email": order.email,
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
        schema_version=1,
        aggregate_type=AGGREGATE_TYPE,
        aggregate_id=str(order.id),
        version=order.event_version,
        payload=payload,
        occurred_at=order.created_at,
    )


def order_cancelled_event(*, order: Order) -> EventEnvelope:
    return EventEnvelope(
        type="order.cancelled",
        schema_version=2,  # version 2 left the customer's email out
        aggregate_type=AGGREGATE_TYPE,
        aggregate_id=str(order.id),
        version=order.event_version,
        payload=_order_summary(order) | {"reason": order.cancel_reason},
        occurred_at=order.cancelled_at or order.updated_at,
    )


def order_paid_event(*, order: Order) -> EventEnvelope:
    return EventEnvelope(
        type="order.paid",
        schema_version=2,  # version 2 left the customer's email out
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
        schema_version=2,  # version 2 left the customer's email out
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
