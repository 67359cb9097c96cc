"""Reads behind the operations page, shaped for its charts; none scans a day of orders.

Orders and revenue per hour come from the orders app's hourly rollup (refreshed by beat every
ORDER_ROLLUP_INTERVAL), with the hours it has not counted yet counted live: a few dozen
rollup rows plus an index-only scan of the last hour or two (orders.selectors). The outbox
figures read only pending and dead rows and the last hour of published ones.

Every selector takes `now` so a page (and a test) sees one consistent instant. Buckets are
UTC hours or minutes, oldest first, and empty buckets are filled with zeros here so the
charts always show the full window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F, Min, Q
from django.db.models.functions import TruncMinute

from orders.models import OrderStatus
from orders.selectors import Tally, order_counts_per_hour_by_status, order_revenue_per_hour
from outbox.models import OutboxEvent, OutboxStatus

# Stacking order of the orders chart, bottom to top.
ORDER_STATUSES: tuple[str, ...] = (
    OrderStatus.PAID,
    OrderStatus.REFUNDED,
    OrderStatus.PENDING_PAYMENT,
    OrderStatus.CANCELLED,
)


def hour_starts(*, now: datetime, hours: int) -> list[datetime]:
    """The `hours` UTC hour starts ending with the current (partial) hour."""
    last = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [last - timedelta(hours=hours - 1 - i) for i in range(hours)]


def minute_starts(*, now: datetime, minutes: int) -> list[datetime]:
    """The `minutes` UTC minute starts ending with the current (partial) minute."""
    last = now.astimezone(UTC).replace(second=0, microsecond=0)
    return [last - timedelta(minutes=minutes - 1 - i) for i in range(minutes)]


@dataclass(frozen=True)
class OrdersHour:
    start: datetime
    # status -> orders created in this hour that have that status now (or at `counted_at`)
    counts: dict[str, int]
    # When the hourly rollup counted this hour; None: counted live, for this page.
    counted_at: datetime | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def orders_per_hour_by_status(*, now: datetime, hours: int = 24) -> list[OrdersHour]:
    """Orders created in each of the last `hours` hours, split by their current status (as
    the hourly rollup last counted them, live for the hours it has not counted yet)."""
    starts = hour_starts(now=now, hours=hours)
    figures = order_counts_per_hour_by_status(
        start=starts[0], end=starts[-1] + timedelta(hours=1), now=now
    )
    return [
        OrdersHour(
            start=start,
            counts={
                status: tally.orders
                for status in ORDER_STATUSES
                for tally in [figures.by_hour.get(start, {}).get(status, Tally(0))]
            },
            counted_at=figures.counted_at if start < figures.live_from else None,
        )
        for start in starts
    ]


@dataclass(frozen=True)
class RevenueHour:
    start: datetime
    amount: Decimal
    orders: int
    counted_at: datetime | None = None  # as OrdersHour.counted_at


@dataclass(frozen=True)
class Revenue:
    """Paid revenue of one currency, per hour of payment."""

    currency: str
    hours: list[RevenueHour] = field(default_factory=list)

    @property
    def total(self) -> Decimal:
        return sum((hour.amount for hour in self.hours), Decimal("0.00"))

    @property
    def orders(self) -> int:
        return sum(hour.orders for hour in self.hours)


def revenue_per_hour(*, now: datetime, hours: int = 24) -> list[Revenue]:
    """Sum of `total` of paid orders by the hour they were paid, one entry per currency
    (the shop currency first, present even when nothing was paid). Refunded orders are
    not revenue: the money went back."""
    starts = hour_starts(now=now, hours=hours)
    figures = order_revenue_per_hour(start=starts[0], end=starts[-1] + timedelta(hours=1), now=now)
    currencies = {settings.SHOP_CURRENCY}
    for by_currency in figures.by_hour.values():
        currencies.update(c for c, tally in by_currency.items() if tally.orders)
    return [
        Revenue(
            currency=currency,
            hours=[
                RevenueHour(
                    start=start,
                    amount=tally.amount,
                    orders=tally.orders,
                    counted_at=figures.counted_at if start < figures.live_from else None,
                )
                for start in starts
                for tally in [figures.by_hour.get(start, {}).get(currency, Tally(0))]
            ],
        )
        for currency in sorted(currencies, key=lambda c: (c != settings.SHOP_CURRENCY, c))
    ]


@dataclass(frozen=True)
class OutboxBacklog:
    pending: int
    oldest_pending_at: datetime | None
    dead: int

    def lag(self, *, now: datetime) -> timedelta | None:
        """Age of the oldest event still waiting to be published (None: nothing waits)."""
        if self.oldest_pending_at is None:
            return None
        return max(now - self.oldest_pending_at, timedelta(0))


def outbox_backlog() -> OutboxBacklog:
    """Pending count, oldest pending event and dead letters, in one query that touches only
    pending and dead rows (published ones are the bulk of the table)."""
    pending = Q(status=OutboxStatus.PENDING)
    row = OutboxEvent.objects.filter(
        status__in=[OutboxStatus.PENDING, OutboxStatus.DEAD]
    ).aggregate(
        pending=Count("id", filter=pending),
        oldest_pending_at=Min("created_at", filter=pending),
        dead=Count("id", filter=Q(status=OutboxStatus.DEAD)),
    )
    return OutboxBacklog(**row)


@dataclass(frozen=True)
class PublishMinute:
    start: datetime
    published: int
    # Mean of published_at − created_at (commit → publish) of this minute's events.
    avg_delay: timedelta | None


def outbox_published_per_minute(*, now: datetime, minutes: int = 60) -> list[PublishMinute]:
    """Events published in each of the last `minutes` minutes and their mean delay."""
    starts = minute_starts(now=now, minutes=minutes)
    delay = ExpressionWrapper(F("published_at") - F("created_at"), output_field=DurationField())
    rows = (
        OutboxEvent.objects.filter(
            status=OutboxStatus.PUBLISHED,
            published_at__gte=starts[0],
            published_at__lt=starts[-1] + timedelta(minutes=1),
        )
        .annotate(minute=TruncMinute("published_at", tzinfo=UTC))
        .values("minute")
        .annotate(n=Count("id"), avg_delay=Avg(delay))
        .order_by()
    )
    found = {row["minute"]: (row["n"], row["avg_delay"]) for row in rows}
    return [
        PublishMinute(start=start, published=n, avg_delay=avg)
        for start in starts
        for n, avg in [found.get(start, (0, None))]
    ]


def mean_delay(minutes: list[PublishMinute]) -> timedelta | None:
    """The mean delay over all events of `minutes` (weighted by each minute's count)."""
    weighted = [
        (m.avg_delay * m.published, m.published) for m in minutes if m.avg_delay is not None
    ]
    events = sum(n for _, n in weighted)
    if not events:
        return None
    return sum((total for total, _ in weighted), timedelta(0)) / events
