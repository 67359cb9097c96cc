"""The operations page's hourly rollup (orders.rollups, read through orders.selectors): it
counts what a live count counts, the page reads it for the hours it covers and counts the
others live, and it is exactly as fresh as the page says."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection

from orders.models import Order, OrderHourRevenue, OrderHourStatusCount, OrderStatus
from orders.rollups import ROLLUP_HOURS, order_hour_rollups_refresh
from orders.selectors import (
    closed_hours_end,
    order_revenue_by_hour,
    order_status_counts_by_hour,
    rollup_max_age,
)
from orders.services import order_mark_refunded
from orders.tasks import refresh_order_hour_rollups
from orders_project.operations import selectors
from orders_project.operations.views import freshness
from tests.operations.helpers import cancel, move_orders, pay, place_orders
from tests.together import StartLine, wait_threads

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 14, 25, 30, tzinfo=UTC)
HOUR = datetime(2026, 3, 10, 14, tzinfo=UTC)  # the current (open) hour at NOW


def at(hour: int, minute: int = 10) -> datetime:
    return datetime(2026, 3, 10, hour, minute, tzinfo=UTC)


def orders_of_a_day():
    """At 09:10 2 paid (paid 09:40) and 1 cancelled; at 13:10 1 pending and 1 paid in EUR
    (paid 13:20); at 14:10 (the open hour) 1 paid. 12.50 each."""
    nine = place_orders(3)
    pay(nine[:2])
    cancel(nine[2:])
    move_orders(nine, created_at=at(9), paid_at=at(9, 40))
    one = place_orders(2)
    pay(one[1:])
    move_orders(one, created_at=at(13), paid_at=at(13, 20))
    Order.objects.filter(pk=one[1].pk).update(currency="EUR")
    two = place_orders(1)
    pay(two)
    move_orders(two, created_at=at(14), paid_at=at(14, 12))
    return nine, one, two


def live_counts(start: datetime, end: datetime) -> dict:
    return {
        (row["hour"], row["status"]): row["n"]
        for row in order_status_counts_by_hour(start=start, end=end)
    }


def test_the_rollup_counts_each_closed_hour_as_a_live_count_does():
    # given a day of orders
    orders_of_a_day()

    # when beat's task recounts at NOW
    order_hour_rollups_refresh(now=NOW)

    # then every status of each of the last ROLLUP_HOURS closed hours has a row, zeros too,
    # equal to a live count; the open hour (14:00) is not in it
    end = closed_hours_end(now=NOW)
    assert end == HOUR
    rows = OrderHourStatusCount.objects.all()
    assert rows.count() == ROLLUP_HOURS * len(OrderStatus.values)
    assert {row.counted_at for row in rows} == {NOW}
    live = live_counts(end - timedelta(hours=ROLLUP_HOURS), end)
    assert {(r.hour, r.status): r.orders for r in rows if r.orders} == live
    assert live == {
        (at(9, 0), OrderStatus.PAID): 2,
        (at(9, 0), OrderStatus.CANCELLED): 1,
        (at(13, 0), OrderStatus.PENDING_PAYMENT): 1,
        (at(13, 0), OrderStatus.PAID): 1,
    }
    # ...and revenue by paid hour and currency, the shop currency on every hour
    revenue = {(r.hour, r.currency): (r.orders, r.amount) for r in OrderHourRevenue.objects.all()}
    assert revenue[(at(9, 0), settings.SHOP_CURRENCY)] == (2, Decimal("25.00"))
    assert revenue[(at(13, 0), "EUR")] == (1, Decimal("12.50"))
    assert revenue[(at(13, 0), settings.SHOP_CURRENCY)] == (0, Decimal("0.00"))
    assert len(revenue) == ROLLUP_HOURS + 1
    live_revenue = order_revenue_by_hour(start=end - timedelta(hours=ROLLUP_HOURS), end=end)
    assert {(r.hour, r.currency): (r.orders, r.amount) for r in OrderHourRevenue.objects.all()
            if r.orders} == {(row["hour"], row["currency"]): (row["n"], row["amount"])
                             for row in live_revenue}  # fmt: skip


def test_the_page_reads_the_rollup_and_counts_the_open_hour_live(django_assert_num_queries):
    # given a day of orders, recounted at NOW
    orders_of_a_day()
    order_hour_rollups_refresh(now=NOW)

    # when the page reads its charts a minute later
    later = NOW + timedelta(minutes=1)
    with django_assert_num_queries(2):  # the rollup's rows, the open hour's orders
        hours = selectors.orders_per_hour_by_status(now=later)
    with django_assert_num_queries(2):
        revenues = selectors.revenue_per_hour(now=later)

    # then the closed hours come from the rollup (as counted at NOW), the open hour live
    assert [h.counted_at for h in hours] == [NOW] * 23 + [None]
    by_hour = {h.start: h for h in hours}
    assert by_hour[at(9, 0)].counts[OrderStatus.PAID] == 2
    assert by_hour[at(13, 0)].counts[OrderStatus.PENDING_PAYMENT] == 1
    assert by_hour[HOUR].counts[OrderStatus.PAID] == 1
    assert sum(h.total for h in hours) == 6
    shop, eur = revenues
    assert (shop.currency, shop.total, shop.orders) == (settings.SHOP_CURRENCY, Decimal("37.50"), 3)
    assert (eur.currency, eur.total, eur.orders) == ("EUR", Decimal("12.50"), 1)
    assert shop.hours[-1].counted_at is None and shop.hours[-2].counted_at == NOW
    # ...and the page says so
    assert freshness(hours, now=later) == (
        "Hours before 14:00 UTC as the hourly rollup counted them at 14:25:30 UTC (1 min ago; "
        "recounted every 1 min); 14:00 UTC to now counted live."
    )


def test_a_change_shows_in_a_counted_hour_at_the_next_recount():
    # given a day of orders recounted at NOW
    nine, one, _ = orders_of_a_day()
    order_hour_rollups_refresh(now=NOW)
    # when, after the count, the 13:00 pending order is paid (at 14:26), a 09:00 paid order
    # and the EUR one are refunded, and an order is created in the 13:00 hour late
    pay(one[:1])
    Order.objects.filter(pk=one[0].pk).update(paid_at=at(14, 26))
    order_mark_refunded(order_id=nine[0].pk)
    order_mark_refunded(order_id=one[1].pk)
    move_orders(place_orders(1), created_at=at(13, 59))
    before = selectors.orders_per_hour_by_status(now=NOW + timedelta(minutes=1))

    # then the rollup's hours still show the count of NOW (the page says "as counted at")
    thirteen = {h.start: h for h in before}[at(13, 0)]
    assert thirteen.counted_at == NOW
    assert thirteen.counts[OrderStatus.PENDING_PAYMENT] == 1
    assert thirteen.total == 2

    # when beat recounts a minute later
    order_hour_rollups_refresh(now=NOW + timedelta(minutes=1))
    after = {
        h.start: h for h in selectors.orders_per_hour_by_status(now=NOW + timedelta(minutes=2))
    }
    revenues = selectors.revenue_per_hour(now=NOW + timedelta(minutes=2))

    # then each change is in: paid, refunded, the late order; EUR revenue gone with its row
    assert after[at(13, 0)].counts == {
        OrderStatus.PAID: 1,
        OrderStatus.REFUNDED: 1,
        OrderStatus.PENDING_PAYMENT: 1,
        OrderStatus.CANCELLED: 0,
    }
    assert after[at(9, 0)].counts[OrderStatus.REFUNDED] == 1
    assert [r.currency for r in revenues] == [settings.SHOP_CURRENCY]
    assert not OrderHourRevenue.objects.filter(currency="EUR").exists()
    (shop,) = revenues
    assert (shop.orders, shop.total) == (3, Decimal("37.50"))  # 09:40, 14:12, 14:26


@pytest.mark.parametrize("rollup", ["none", "too old"])
def test_without_a_recent_rollup_every_hour_is_counted_live(rollup, django_assert_num_queries):
    # given a day of orders, never recounted or recounted longer ago than the rollup is trusted
    orders_of_a_day()
    now = NOW
    if rollup == "too old":
        order_hour_rollups_refresh(now=NOW)
        now = NOW + rollup_max_age() + timedelta(seconds=1)
        Order.objects.filter(created_at__gte=at(9, 0)).update(status=OrderStatus.CANCELLED,
                                                               cancel_reason="payment_expired",
                                                               cancelled_at=now)  # fmt: skip

    # when the page reads its chart
    with django_assert_num_queries(2):
        hours = selectors.orders_per_hour_by_status(now=now)

    # then every hour is counted live (the statuses as they are now, not as an old count
    # had them), and the page says the rollup is missing
    assert all(h.counted_at is None for h in hours)
    assert sum(h.total for h in hours) == 6
    cancelled = 6 if rollup == "too old" else 1
    assert sum(h.counts[OrderStatus.CANCELLED] for h in hours) == cancelled
    assert freshness(hours, now=now).startswith("All hours counted live for this page")


def test_an_hour_is_counted_only_once_its_late_commits_are_in():
    # given an order created at 13:59:59 (its transaction may commit a little after 14:00)
    move_orders(place_orders(1), created_at=datetime(2026, 3, 10, 13, 59, 59, tzinfo=UTC))

    # when beat recounts 30 s after the hour, then 90 s after it
    order_hour_rollups_refresh(now=datetime(2026, 3, 10, 14, 0, 30, tzinfo=UTC))
    assert not OrderHourStatusCount.objects.filter(hour=at(13, 0)).exists()
    early = selectors.orders_per_hour_by_status(now=datetime(2026, 3, 10, 14, 0, 40, tzinfo=UTC))
    order_hour_rollups_refresh(now=datetime(2026, 3, 10, 14, 1, 30, tzinfo=UTC))
    late = selectors.orders_per_hour_by_status(now=datetime(2026, 3, 10, 14, 1, 40, tzinfo=UTC))

    # then the first count leaves 13:00 to the live count; the second covers it
    assert OrderHourStatusCount.objects.filter(hour=at(13, 0)).count() == len(OrderStatus.values)
    assert [h.counted_at for h in early[-3:]] == [
        datetime(2026, 3, 10, 14, 0, 30, tzinfo=UTC),
        None,
        None,
    ]
    assert early[-2].total == 1
    assert [h.counted_at for h in late[-2:]] == [
        datetime(2026, 3, 10, 14, 1, 30, tzinfo=UTC),
        None,
    ]
    assert late[-2].total == 1


def test_the_rollup_forgets_hours_out_of_its_window():
    # given a count of yesterday's hours
    order_hour_rollups_refresh(now=NOW - timedelta(days=1))

    # when beat counts today
    order_hour_rollups_refresh(now=NOW)

    # then only the last ROLLUP_HOURS hours are kept
    start = closed_hours_end(now=NOW) - timedelta(hours=ROLLUP_HOURS)
    assert not OrderHourStatusCount.objects.filter(hour__lt=start).exists()
    assert not OrderHourRevenue.objects.filter(hour__lt=start).exists()
    assert OrderHourStatusCount.objects.count() == ROLLUP_HOURS * len(OrderStatus.values)


def test_beat_runs_the_recount_every_interval():
    entry = settings.CELERY_BEAT_SCHEDULE["refresh-order-hour-rollups"]
    assert entry["task"] == refresh_order_hour_rollups.name
    assert entry["schedule"] == settings.ORDER_ROLLUP_INTERVAL

    # the task recounts (here at the real now)
    written = refresh_order_hour_rollups()

    assert written == OrderHourStatusCount.objects.count() + OrderHourRevenue.objects.count() > 0


@pytest.mark.django_db(transaction=True)
def test_recounts_running_at_once_all_succeed_and_agree():
    # given a day of orders
    orders_of_a_day()
    errors: list[BaseException] = []
    start = StartLine(4)

    def recount(offset: int) -> None:
        try:
            start.wait()
            for i in range(3):
                order_hour_rollups_refresh(now=NOW + timedelta(seconds=offset + i))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=recount, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()

    # when four recounts run at once, three times each
    start.release(what="4 recounts at the start line")
    wait_threads(threads, what="the recounts")

    # then none failed (upserts on the unique keys) and the rows are one count
    assert errors == []
    assert OrderHourStatusCount.objects.count() == ROLLUP_HOURS * len(OrderStatus.values)
    end = closed_hours_end(now=NOW)
    live = live_counts(end - timedelta(hours=ROLLUP_HOURS), end)
    assert {
        (r.hour, r.status): r.orders for r in OrderHourStatusCount.objects.all() if r.orders
    } == live
