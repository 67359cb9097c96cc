"""Writes of the operations page's hourly rollup: orders per created hour and current status,
revenue per paid hour and currency, for the closed hours of the last ROLLUP_HOURS.

A beat task (orders.tasks.refresh_order_hour_rollups, every ORDER_ROLLUP_INTERVAL) recounts
every closed hour of the window on each run, so an hour's figures are those of the last run:
a status that changed since (a payment, a cancellation, a refund of an order from any hour)
shows at the next run. The reads (orders.selectors) count live whatever the rollup does not
cover. The order write path never touches these tables: no hot row for orders to contend
for, nothing added to an order's transaction.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from orders.models import OrderHourRevenue, OrderHourStatusCount, OrderStatus
from orders.selectors import (
    HOUR,
    closed_hours_end,
    order_revenue_by_hour,
    order_status_counts_by_hour,
)

# The page's 24 hours plus the two that turn over between a run and a page view.
ROLLUP_HOURS = 26


def order_hour_rollups_refresh(*, now: datetime | None = None) -> int:
    """Recount the closed hours of the last ROLLUP_HOURS into the rollup; drop older hours.
    Idempotent, and safe to run twice at once (upserts on each table's unique key). Returns
    the rows written."""
    # Stamped before counting: every row counts at least what had committed by then.
    counted_at = now or timezone.now()
    end = closed_hours_end(now=counted_at)
    start = end - HOUR * ROLLUP_HOURS
    hours = [start + HOUR * i for i in range(ROLLUP_HOURS)]
    statuses = _status_rows(hours, start=start, end=end, counted_at=counted_at)
    revenue = _revenue_rows(hours, start=start, end=end, counted_at=counted_at)
    with transaction.atomic():
        OrderHourStatusCount.objects.filter(hour__lt=start).delete()
        OrderHourRevenue.objects.filter(hour__lt=start).delete()
        OrderHourStatusCount.objects.bulk_create(
            statuses,
            update_conflicts=True,
            unique_fields=["hour", "status"],
            update_fields=["orders", "counted_at"],
        )
        OrderHourRevenue.objects.bulk_create(
            revenue,
            update_conflicts=True,
            unique_fields=["hour", "currency"],
            update_fields=["orders", "amount", "counted_at"],
        )
        # A currency whose last paid order of an hour was refunded has no row in this run.
        OrderHourRevenue.objects.filter(hour__gte=start, counted_at__lt=counted_at).delete()
    return len(statuses) + len(revenue)


def _status_rows(
    hours: list[datetime], *, start: datetime, end: datetime, counted_at: datetime
) -> list[OrderHourStatusCount]:
    counts = {
        (row["hour"], row["status"]): row["n"]
        for row in order_status_counts_by_hour(start=start, end=end)
    }
    return [
        OrderHourStatusCount(
            hour=hour, status=status, orders=counts.get((hour, status), 0), counted_at=counted_at
        )
        for hour in hours
        for status in OrderStatus.values
    ]


def _revenue_rows(
    hours: list[datetime], *, start: datetime, end: datetime, counted_at: datetime
) -> list[OrderHourRevenue]:
    # The shop currency on every hour, zero or not: the reader knows the hour was counted.
    found = {(hour, settings.SHOP_CURRENCY): (0, Decimal("0.00")) for hour in hours}
    for row in order_revenue_by_hour(start=start, end=end):
        found[(row["hour"], row["currency"])] = (row["n"], row["amount"])
    return [
        OrderHourRevenue(
            hour=hour, currency=currency, orders=orders, amount=amount, counted_at=counted_at
        )
        for (hour, currency), (orders, amount) in sorted(found.items())
    ]
