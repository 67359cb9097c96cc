"""Reads of the orders app."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple
from uuid import UUID

from django.conf import settings
from django.db.models import Count, Model, Prefetch, QuerySet, Sum
from django.db.models.functions import Collate, TruncHour

from clients.models import ApiClient
from orders.models import (
    Order,
    OrderHourRevenue,
    OrderHourStatusCount,
    OrderItem,
    OrderStatus,
)


def _with_items(orders: QuerySet[Order]) -> QuerySet[Order]:
    # By code point (COLLATE "C"), whatever the database's collation: the 201 of a creation
    # sorts the same items in Python (orders.services), and the two must agree byte for byte.
    items = OrderItem.objects.order_by(Collate("sku", "C"))
    return orders.prefetch_related(Prefetch("items", queryset=items))


def order_list_for_client(
    *, client: ApiClient, status: str | None = None, email: str | None = None
) -> QuerySet[Order]:
    orders = Order.objects.filter(client=client)
    if status:
        orders = orders.filter(status=status)
    if email:
        orders = orders.filter(email=email)
    return _with_items(orders)


def order_get_for_client(*, client: ApiClient, order_id: UUID) -> Order | None:
    """One of the client's orders; another client's order is None, as if it did not exist."""
    return _with_items(Order.objects.filter(client=client, pk=order_id)).first()


def order_get(*, order_id: UUID) -> Order | None:
    return _with_items(Order.objects.filter(pk=order_id)).first()


# --- the payment shown on an order (read-side hook) --------------------------------------


@dataclass(frozen=True)
class PaymentSummary:
    """What the API shows as an order's `payment`."""

    status: str
    provider_payment_id: str | None


PaymentSummaryReader = Callable[[Sequence[UUID]], Mapping[UUID, PaymentSummary]]
_payment_summary_reader: PaymentSummaryReader | None = None


def register_payment_summary_reader(reader: PaymentSummaryReader) -> None:
    """The payments app registers how to read orders' payments (from its AppConfig.ready()):
    orders shows a payment without importing payments, as it emits events to it."""
    global _payment_summary_reader
    _payment_summary_reader = reader


def order_payment_summaries(*, order_ids: Sequence[UUID]) -> Mapping[UUID, PaymentSummary]:
    """The payment of each order that has one, read at once for a page of orders."""
    if _payment_summary_reader is None or not order_ids:
        return {}
    return _payment_summary_reader(order_ids)


# --- orders and revenue per hour (the operations page) ------------------------------------
#
# Hours the hourly rollup (orders.rollups, refreshed by beat) counted after they closed are
# read from it: a few rows per hour instead of every order. The hours it has not counted yet
# (the current one, the one that just closed) are counted live, by an index-only scan of that
# hour or two. A rollup older than rollup_max_age() is ignored (everything counted live: slower,
# still right), so a stopped beat costs speed, never correctness.

HOUR = timedelta(hours=1)
# created_at / paid_at are stamped before their transaction commits: an hour is counted as
# closed only this long after its end, so an order committing late is not missed.
ROLLUP_COMMIT_MARGIN = timedelta(minutes=1)


def rollup_max_age() -> timedelta:
    """Beyond this age the rollup is not trusted: ten missed refreshes."""
    return timedelta(seconds=settings.ORDER_ROLLUP_INTERVAL * 10)


def closed_hours_end(*, now: datetime) -> datetime:
    """The start of the first hour that is not closed (with its commit margin) at `now`."""
    return (now - ROLLUP_COMMIT_MARGIN).astimezone(UTC).replace(minute=0, second=0, microsecond=0)


class Tally(NamedTuple):
    orders: int
    amount: Decimal = Decimal("0.00")  # the sum of their totals, where it is counted


@dataclass(frozen=True)
class HourlyFigures:
    """Figures per UTC hour over [start, end): the hours before `live_from` as the rollup
    counted them at `counted_at`, the others counted live (now)."""

    # hour -> key (a status, or a currency) -> its tally; an absent key is no orders
    by_hour: dict[datetime, dict[str, Tally]]
    live_from: datetime
    counted_at: datetime | None  # None: no hour came from the rollup


def _rolled_up(
    model: type[Model], key: str, *, start: datetime, end: datetime, now: datetime
) -> HourlyFigures:
    """The rollup's rows of [start, end) up to the first hour it does not cover."""
    rows: dict[datetime, list[dict]] = {}
    for row in model._default_manager.filter(hour__gte=start, hour__lt=end).values():
        rows.setdefault(row["hour"], []).append(row)
    by_hour: dict[datetime, dict[str, Tally]] = {}
    counted: list[datetime] = []
    hour = start
    while hour < end and _covers(rows.get(hour, []), now=now):
        counted.extend(row["counted_at"] for row in rows[hour])
        by_hour[hour] = {
            row[key]: Tally(row["orders"], row.get("amount", Decimal("0.00"))) for row in rows[hour]
        }
        hour += HOUR
    return HourlyFigures(by_hour=by_hour, live_from=hour, counted_at=min(counted, default=None))


def _covers(rows: list[dict], *, now: datetime) -> bool:
    """Whether the rollup counted this hour (it counts only hours closed with their commit
    margin: orders.rollups) recently enough to be trusted."""
    return bool(rows) and all(row["counted_at"] >= now - rollup_max_age() for row in rows)


def order_counts_per_hour_by_status(
    *, start: datetime, end: datetime, now: datetime
) -> HourlyFigures:
    """Orders created in each hour of [start, end) by their current status."""
    figures = _rolled_up(OrderHourStatusCount, "status", start=start, end=end, now=now)
    if figures.live_from < end:
        for row in order_status_counts_by_hour(start=figures.live_from, end=end):
            figures.by_hour.setdefault(row["hour"], {})[row["status"]] = Tally(row["n"])
    return figures


def order_revenue_per_hour(*, start: datetime, end: datetime, now: datetime) -> HourlyFigures:
    """Orders paid in each hour of [start, end) and still paid, per currency."""
    figures = _rolled_up(OrderHourRevenue, "currency", start=start, end=end, now=now)
    if figures.live_from < end:
        for row in order_revenue_by_hour(start=figures.live_from, end=end):
            tally = Tally(row["n"], row["amount"])
            figures.by_hour.setdefault(row["hour"], {})[row["currency"]] = tally
    return figures


def order_status_counts_by_hour(*, start: datetime, end: datetime) -> QuerySet:
    """Rows of (hour, status, n) of the orders created in [start, end): an index-only scan
    of order_created_id_idx (created_at, id) INCLUDE (status)."""
    return (
        Order.objects.filter(created_at__gte=start, created_at__lt=end)
        .annotate(hour=TruncHour("created_at", tzinfo=UTC))
        .values("hour", "status")
        .annotate(n=Count("id"))
        .order_by()
    )


def order_revenue_by_hour(*, start: datetime, end: datetime) -> QuerySet:
    """Rows of (hour, currency, n, amount) of the orders paid in [start, end) that are still
    paid (a refund takes an order out of the revenue): order_paid_at_idx, index-only."""
    return (
        Order.objects.filter(status=OrderStatus.PAID, paid_at__gte=start, paid_at__lt=end)
        .annotate(hour=TruncHour("paid_at", tzinfo=UTC))
        .values("hour", "currency")
        .annotate(n=Count("id"), amount=Sum("total"))
        .order_by()
    )
