"""Builders for the operations tests: orders through the real services, outbox rows in a
chosen state, timestamps moved to chosen instants, and readers of the rendered page."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from clients.models import ApiClient
from orders.models import CancelReason, Order
from orders.services import OrderLine, order_cancel, order_create, order_mark_paid
from outbox.models import OutboxEvent, OutboxStatus
from tests.factories import make_api_client, make_product

PAGE = "/admin/operations/"


def place_orders(count: int, *, price: str = "12.50", client: ApiClient | None = None):
    """`count` pending orders of one unit each of a fresh product at `price`."""
    client = client or make_api_client()[0]
    product = make_product(price=Decimal(price), stock=count + 10)
    return [
        order_create(
            client=client,
            email=f"ops-{uuid.uuid4().hex[:8]}@example.com",
            lines=[OrderLine(product_id=product.pk, quantity=1)],
        )
        for _ in range(count)
    ]


def pay(orders: list[Order]) -> None:
    for order in orders:
        order_mark_paid(order_id=order.pk)


def cancel(orders: list[Order]) -> None:
    for order in orders:
        order_cancel(order_id=order.pk, reason=CancelReason.CUSTOMER_REQUESTED)


def move_orders(orders: list[Order], *, created_at: datetime, paid_at: datetime | None = None):
    """Pretend the orders were created (and, if paid, paid) at other instants."""
    qs = Order.objects.filter(pk__in=[o.pk for o in orders])
    qs.update(created_at=created_at)
    if paid_at is not None:
        qs.filter(paid_at__isnull=False).update(paid_at=paid_at)


def outbox_rows(count: int, *, status: str, created_at: datetime, **fields) -> None:
    """`count` synthetic outbox events in `status`, created at `created_at`."""
    ids = []
    for _ in range(count):
        ids.append(
            OutboxEvent.objects.create(
                type="test.happened",
                aggregate_type="ops-test",
                aggregate_id=uuid.uuid4().hex[:12],
                version=1,
                occurred_at=created_at,
                payload={},
                next_attempt_at=created_at,
                status=status,
                **fields,
            ).pk
        )
    # created_at is auto_now_add: set the chosen instant afterwards.
    OutboxEvent.objects.filter(pk__in=ids).update(created_at=created_at)


def publish_all(*, published_at: datetime, delay: timedelta) -> int:
    """Mark every pending event published at `published_at`, committed `delay` before."""
    return OutboxEvent.objects.filter(status=OutboxStatus.PENDING).update(
        status=OutboxStatus.PUBLISHED, published_at=published_at, created_at=published_at - delay
    )


def hour_start(moment: datetime | None = None) -> datetime:
    return (moment or timezone.now()).replace(minute=0, second=0, microsecond=0)


def panel(html: str, panel_id: str) -> str:
    """The markup of one `<section id=panel_id>` of the page."""
    match = re.search(rf'<section[^>]*id="{panel_id}".*?</section>', html, re.S)
    assert match, f"no panel {panel_id}"
    return match.group(0)


def bars(markup: str, key: str = "") -> int:
    """How many bar segments (of series `key`, or of any) the markup draws."""
    return len(re.findall(rf'class="bar bar-{key}', markup))


def cell(markup: str, attribute: str, value: str) -> str:
    """The text of the `<td {attribute}="{value}">` figure."""
    match = re.search(rf'<td {attribute}="{value}">([^<]*)</td>', markup)
    assert match, f"no cell {attribute}={value}"
    return match.group(1)
