"""The operations page: read the selectors once, turn their numbers into SVG and tiles.

Wired in orders_project/urls.py through `admin.site.admin_view`, which enforces a staff
login (and never_cache); the page permission is checked here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe

from orders.models import OrderStatus
from orders_project.operations import selectors
from orders_project.operations.models import VIEW_DASHBOARD
from orders_project.operations.svg import (
    Line,
    Series,
    bar_chart,
    format_duration,
    format_money,
    format_seconds,
)
from outbox.models import OutboxStatus

# Okabe–Ito colours: distinguishable with the common colour-vision deficiencies.
# Keyed by status; looked up with the plain strings the selectors return.
STATUS_SERIES: dict[str, Series] = {
    OrderStatus.PAID: Series("paid", "Paid", "#009E73"),
    OrderStatus.REFUNDED: Series("refunded", "Refunded", "#CC79A7"),
    OrderStatus.PENDING_PAYMENT: Series("pending_payment", "Pending payment", "#E69F00"),
    OrderStatus.CANCELLED: Series("cancelled", "Cancelled", "#A0A0A0"),
}
SHORT: dict[str, str] = {
    OrderStatus.PAID: "paid",
    OrderStatus.REFUNDED: "refunded",
    OrderStatus.PENDING_PAYMENT: "pending",
    OrderStatus.CANCELLED: "cancelled",
}
REVENUE_SERIES = Series("revenue", "Revenue", "#0072B2")
PUBLISHED_SERIES = Series("published", "Events published", "#56B4E9")
DELAY_COLOR = "#CC79A7"

# The relay runs every second; a backlog older than this is worth a look, then an alarm.
LAG_WARN = timedelta(seconds=30)
LAG_ALERT = timedelta(minutes=5)

DEAD_LETTERS_URL = "admin:outbox_outboxevent_changelist"


def operations_dashboard(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(VIEW_DASHBOARD):
        raise PermissionDenied
    now = timezone.now()
    context = {
        **admin.site.each_context(request),
        "title": "Operations",
        "now": now,
        "orders": _orders_panel(selectors.orders_per_hour_by_status(now=now), now=now),
        "revenues": [_revenue_panel(r, now=now) for r in selectors.revenue_per_hour(now=now)],
        "outbox": _outbox_panel(
            selectors.outbox_backlog(),
            selectors.outbox_published_per_minute(now=now),
            now=now,
            can_view_events=request.user.has_perm("outbox.view_outboxevent"),
        ),
    }
    return TemplateResponse(request, "admin/operations/dashboard.html", context)


def _hour_label(start: datetime) -> str:
    # Every third hour, on the clock's own multiples of three so labels don't wander.
    return f"{start:%H}:00" if start.hour % 3 == 0 else ""


def _hour_title(start: datetime) -> str:
    return f"{start:%H}:00–{start + timedelta(hours=1):%H}:00 UTC"


def freshness(hours: Sequence[selectors.OrdersHour | selectors.RevenueHour], *, now) -> str:
    """How fresh a chart's hours are: up to which hour the hourly rollup counted them (and
    when), from which hour on they were counted live for this page."""
    every = format_duration(timedelta(seconds=settings.ORDER_ROLLUP_INTERVAL))
    counted = [h.counted_at for h in hours if h.counted_at is not None]
    live = [h.start for h in hours if h.counted_at is None]
    if not counted:
        return (
            f"All hours counted live for this page: no recent hourly rollup (beat recounts "
            f"it every {every}; is it running?)."
        )
    as_of = min(counted)
    which = f"Hours before {live[0]:%H}:00 UTC" if live else "Every hour"
    rolled = (
        f"{which} as the hourly rollup counted them at {as_of:%H:%M:%S} UTC "
        f"({format_duration(max(now - as_of, timedelta(0)))} ago; recounted every {every})"
    )
    return f"{rolled}; {live[0]:%H}:00 UTC to now counted live." if live else f"{rolled}."


def _orders_panel(hours: list[selectors.OrdersHour], *, now: datetime) -> dict:
    series = [STATUS_SERIES[status] for status in selectors.ORDER_STATUSES]
    chart = bar_chart(
        title="Orders per hour by status, last 24 hours (UTC)",
        labels=[_hour_label(h.start) for h in hours],
        bucket_titles=[_hour_title(h.start) for h in hours],
        series=series,
        values=[[h.counts[status] for status in selectors.ORDER_STATUSES] for h in hours],
        empty_text="No orders in the last 24 hours",
    )
    totals = {status: sum(h.counts[status] for h in hours) for status in selectors.ORDER_STATUSES}
    busiest = max(hours, key=lambda h: h.total)
    return {
        "chart": mark_safe(chart),  # noqa: S308 — built by svg.py, every text escaped
        "freshness": freshness(hours, now=now),
        "total": sum(totals.values()),
        "by_status": [
            {"series": STATUS_SERIES[status], "count": totals[status], "short": SHORT[status]}
            for status in selectors.ORDER_STATUSES
        ],
        "busiest": busiest if busiest.total else None,
        "busiest_label": f"{busiest.start:%H}:00 UTC",
    }


def _revenue_panel(revenue: selectors.Revenue, *, now: datetime) -> dict:
    chart = bar_chart(
        title=f"Revenue per hour ({revenue.currency}), paid orders by time of payment",
        labels=[_hour_label(h.start) for h in revenue.hours],
        bucket_titles=[_hour_title(h.start) for h in revenue.hours],
        series=[REVENUE_SERIES],
        values=[[float(h.amount)] for h in revenue.hours],
        value_format=lambda v: f"{revenue.currency} {format_money(v)}",
        integer=False,
        empty_text="No payments in the last 24 hours",
    )
    orders = revenue.orders
    return {
        "chart": mark_safe(chart),  # noqa: S308 — built by svg.py, every text escaped
        "freshness": freshness(revenue.hours, now=now),
        "currency": revenue.currency,
        "total": format_money(revenue.total),
        "orders": orders,
        "average": format_money(revenue.total / orders) if orders else "—",
    }


def _outbox_panel(
    backlog: selectors.OutboxBacklog,
    minutes: list[selectors.PublishMinute],
    *,
    now: datetime,
    can_view_events: bool,
) -> dict:
    lag = backlog.lag(now=now)
    if lag is None or lag < LAG_WARN:
        lag_level = "ok"
    elif lag < LAG_ALERT:
        lag_level = "warn"
    else:
        lag_level = "alert"
    chart = bar_chart(
        title="Outbox events published per minute and mean commit-to-publish delay, last hour",
        labels=[f"{m.start:%H:%M}" if m.start.minute % 10 == 0 else "" for m in minutes],
        bucket_titles=[f"{m.start:%H:%M} UTC" for m in minutes],
        series=[PUBLISHED_SERIES],
        values=[[m.published] for m in minutes],
        line=Line(
            label="Mean delay",
            color=DELAY_COLOR,
            values=[
                m.avg_delay.total_seconds() if m.avg_delay is not None else None for m in minutes
            ],
            format=format_seconds,
            tick_format=lambda v: format_seconds(v).replace(".0 s", " s"),
        ),
        empty_text="Nothing published in the last hour",
    )
    published = sum(m.published for m in minutes)
    changelist = reverse(DEAD_LETTERS_URL)
    return {
        "chart": mark_safe(chart),  # noqa: S308 — built by svg.py, every text escaped
        "pending": backlog.pending,
        "lag": format_duration(lag) if lag is not None else None,
        "lag_level": lag_level,
        "published": published,
        "per_minute": f"{published / len(minutes):,.1f}" if minutes else "0",
        "mean_delay": format_duration(selectors.mean_delay(minutes)),
        "dead": backlog.dead,
        "dead_url": f"{changelist}?status__exact={OutboxStatus.DEAD}" if can_view_events else None,
        "pending_url": f"{changelist}?status__exact={OutboxStatus.PENDING}"
        if can_view_events
        else None,
    }
