"""The selectors behind the page: right buckets, right sums, a bounded number of queries each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings

from orders.models import Order, OrderStatus
from orders_project.operations import selectors
from outbox.models import OutboxEvent, OutboxStatus
from tests.operations.helpers import (
    cancel,
    move_orders,
    outbox_rows,
    pay,
    place_orders,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 14, 25, 30, tzinfo=UTC)
HOUR = datetime(2026, 3, 10, 14, tzinfo=UTC)


def test_orders_per_hour_by_status(django_assert_num_queries):
    # given: at 14:05 two paid and a pending order; at 09:59 a cancelled one; one order
    # from yesterday 14:59 (out of the 24 h window, which starts at 15:00)
    this_hour = place_orders(3)
    pay(this_hour[:2])
    move_orders(this_hour, created_at=HOUR + timedelta(minutes=5))
    morning = place_orders(1)
    cancel(morning)
    move_orders(morning, created_at=datetime(2026, 3, 10, 9, 59, 59, tzinfo=UTC))
    move_orders(place_orders(1), created_at=datetime(2026, 3, 9, 14, 59, 59, tzinfo=UTC))

    # when
    # the hourly rollup (empty here: every hour is counted live), then the live count
    with django_assert_num_queries(2):
        hours = selectors.orders_per_hour_by_status(now=NOW)

    # then
    assert len(hours) == 24
    assert hours[0].start == datetime(2026, 3, 9, 15, tzinfo=UTC)
    assert hours[-1].start == HOUR
    assert hours[-1].counts == {
        OrderStatus.PAID: 2,
        OrderStatus.REFUNDED: 0,
        OrderStatus.PENDING_PAYMENT: 1,
        OrderStatus.CANCELLED: 0,
    }
    nine = next(h for h in hours if h.start.hour == 9)
    assert nine.counts[OrderStatus.CANCELLED] == 1
    assert sum(h.total for h in hours) == 4


def test_revenue_per_hour_sums_paid_orders_by_payment_time(django_assert_num_queries):
    # given: three paid orders (10.00, 10.00 at 13:xx; 25.00 at 14:xx), one of them in EUR,
    # a pending and a cancelled order that bring no revenue
    cheap = place_orders(2, price="10.00")
    dear = place_orders(1, price="25.00")
    pay(cheap + dear)
    move_orders(cheap, created_at=HOUR, paid_at=HOUR - timedelta(minutes=30))
    move_orders(dear, created_at=HOUR, paid_at=HOUR + timedelta(minutes=20))
    Order.objects.filter(pk=cheap[1].pk).update(currency="EUR")
    unpaid = place_orders(2, price="99.00")
    cancel(unpaid[:1])
    move_orders(unpaid, created_at=HOUR)

    # when
    # the hourly rollup (empty here: every hour is counted live), then the live count
    with django_assert_num_queries(2):
        revenues = selectors.revenue_per_hour(now=NOW)

    # then: the shop currency first
    assert [r.currency for r in revenues] == [settings.SHOP_CURRENCY, "EUR"]
    shop, eur = revenues
    assert len(shop.hours) == 24
    assert (shop.total, shop.orders) == (Decimal("35.00"), 2)
    assert shop.hours[-1].amount == Decimal("25.00")
    assert shop.hours[-2].amount == Decimal("10.00")
    assert (eur.total, eur.orders) == (Decimal("10.00"), 1)


def test_revenue_without_payments_is_the_shop_currency_at_zero():
    (revenue,) = selectors.revenue_per_hour(now=NOW)

    assert revenue.currency == settings.SHOP_CURRENCY
    assert revenue.total == Decimal("0.00")
    assert len(revenue.hours) == 24


def test_outbox_backlog(django_assert_num_queries):
    outbox_rows(3, status=OutboxStatus.PENDING, created_at=NOW - timedelta(seconds=40))
    outbox_rows(1, status=OutboxStatus.PENDING, created_at=NOW - timedelta(minutes=7))
    outbox_rows(2, status=OutboxStatus.DEAD, created_at=NOW - timedelta(days=2))
    outbox_rows(5, status=OutboxStatus.PUBLISHED, created_at=NOW - timedelta(days=3))
    outbox_rows(1, status=OutboxStatus.DISCARDED, created_at=NOW - timedelta(days=3))

    with django_assert_num_queries(1):
        backlog = selectors.outbox_backlog()

    assert (backlog.pending, backlog.dead) == (4, 2)
    assert backlog.lag(now=NOW) == timedelta(minutes=7)


def test_outbox_backlog_when_nothing_waits():
    backlog = selectors.outbox_backlog()

    assert (backlog.pending, backlog.dead, backlog.lag(now=NOW)) == (0, 0, None)


def test_published_per_minute_and_mean_delay(django_assert_num_queries):
    # given: at 14:20 two events 1 s and 3 s after commit; at 14:25 one 10 s after; one
    # published 61 minutes ago (outside the hour)
    def published(at: datetime, delay: timedelta) -> None:
        outbox_rows(1, status=OutboxStatus.PUBLISHED, created_at=at - delay, published_at=at)

    published(datetime(2026, 3, 10, 14, 20, 5, tzinfo=UTC), timedelta(seconds=1))
    published(datetime(2026, 3, 10, 14, 20, 50, tzinfo=UTC), timedelta(seconds=3))
    published(datetime(2026, 3, 10, 14, 25, 1, tzinfo=UTC), timedelta(seconds=10))
    published(NOW - timedelta(minutes=61), timedelta(seconds=1))
    assert OutboxEvent.objects.count() == 4

    # when
    with django_assert_num_queries(1):
        minutes = selectors.outbox_published_per_minute(now=NOW)

    # then
    assert len(minutes) == 60
    assert minutes[0].start == datetime(2026, 3, 10, 13, 26, tzinfo=UTC)
    by_start = {m.start: m for m in minutes if m.published}
    twenty = by_start.pop(datetime(2026, 3, 10, 14, 20, tzinfo=UTC))
    assert (twenty.published, twenty.avg_delay) == (2, timedelta(seconds=2))
    last = by_start.pop(datetime(2026, 3, 10, 14, 25, tzinfo=UTC))
    assert (last.published, last.avg_delay) == (1, timedelta(seconds=10))
    assert by_start == {}
    # the hour's mean weighs each minute by its events: (1 + 3 + 10) / 3
    assert selectors.mean_delay(minutes) == timedelta(seconds=14) / 3
