"""The order changelist's counts and date hierarchy at scale (issue 11): an estimated count
unfiltered, a capped count filtered, and the date hierarchy's buckets found by index seeks —
each giving what the admin showed before wherever it can be exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.utils import timezone

from core.admin_paginator import DateBucketsBySeekQuerySet, EstimatedCountPaginator
from orders.models import Order, OrderStatus
from tests.orders.helpers import unique_email

pytestmark = pytest.mark.django_db


class SmallCapPaginator(EstimatedCountPaginator):
    count_cap = 3


class AlwaysSeekingQuerySet(DateBucketsBySeekQuerySet):
    count_cap = 0  # every result counts as large: the buckets are always found by seeks


def make_orders(client, *, created: list[datetime], email: str | None = None) -> list[Order]:
    orders = []
    for moment in created:
        order = Order.objects.create(
            client=client,
            email=email or unique_email(),
            total=Decimal("10.00"),
            currency="EUR",
            expires_at=timezone.now() + timedelta(minutes=30),
        )
        Order.objects.filter(pk=order.pk).update(created_at=moment)
        orders.append(order)
    return orders


def hours_ago(*hours: int) -> list[datetime]:
    now = timezone.now()
    return [now - timedelta(hours=h) for h in hours]


def test_a_small_unfiltered_table_is_counted_exactly(api_client_and_key):
    # given 2 orders (fewer than the cap)
    make_orders(api_client_and_key[0], created=hours_ago(1, 2))

    # when the changelist paginator counts the unfiltered orders
    count = SmallCapPaginator(Order.objects.all(), 100).count

    # then it is the exact count
    assert count == 2


def test_a_large_unfiltered_table_is_not_counted_but_estimated(api_client_and_key):
    # given 5 orders the planner knows of (ANALYZE), then 2 more it does not
    make_orders(api_client_and_key[0], created=hours_ago(1, 2, 3, 4, 5))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE orders_order")
    make_orders(api_client_and_key[0], created=hours_ago(6, 7))

    # when the changelist paginator counts the unfiltered orders (the estimate ≥ the cap)
    count = SmallCapPaginator(Order.objects.all(), 100).count

    # then it answers with the planner's estimate, not a COUNT(*) of the table
    assert count == 5


def test_a_filtered_count_stops_at_the_cap(api_client_and_key):
    # given 5 paid-looking orders with one e-mail and 1 other
    email = unique_email()
    make_orders(api_client_and_key[0], created=hours_ago(1, 2, 3, 4, 5), email=email)
    make_orders(api_client_and_key[0], created=hours_ago(6))

    # when filtered counts are taken below and above the cap
    above = SmallCapPaginator(Order.objects.filter(email=email), 100).count
    below = SmallCapPaginator(Order.objects.exclude(email=email), 100).count

    # then the count is exact under the cap and the cap beyond it
    assert below == 1
    assert above == 3


@pytest.mark.parametrize("kind", ["year", "month", "day"])
def test_date_buckets_by_seek_equal_the_distinct_buckets(api_client_and_key, kind):
    # given orders across year, month and day boundaries
    moments = [
        datetime(2025, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, tzinfo=UTC),
        datetime(2026, 1, 1, 13, 0, tzinfo=UTC),
        datetime(2026, 2, 28, 8, 0, tzinfo=UTC),
        datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC),
    ]
    make_orders(api_client_and_key[0], created=moments)
    mine = Order.objects.filter(client=api_client_and_key[0])
    seeking = AlwaysSeekingQuerySet(model=Order, query=mine.query.chain())

    # when the date hierarchy asks for the buckets, by seeks
    by_seek = seeking.datetimes("created_at", kind)

    # then they are exactly the DISTINCT buckets, in both orders
    assert list(by_seek) == list(mine.datetimes("created_at", kind))
    assert list(seeking.datetimes("created_at", kind, order="DESC")) == list(
        mine.datetimes("created_at", kind, order="DESC")
    )


def test_the_changelist_finds_an_order_by_email_and_by_id(api_client_and_key):
    # given a superuser and two orders of one e-mail among others
    email = unique_email()
    found = make_orders(api_client_and_key[0], created=hours_ago(1, 2), email=email)
    make_orders(api_client_and_key[0], created=hours_ago(3))
    Order.objects.filter(pk=found[0].pk).update(status=OrderStatus.PAID, paid_at=timezone.now())
    staff = get_user_model().objects.create_superuser(username=unique_email(), password=None)
    http = Client()
    http.force_login(staff)

    # when staff search by e-mail (part of it, another case) and by id, and filter by status
    by_email = http.get("/admin/orders/order/", {"q": email.upper()[2:]})
    by_id = http.get("/admin/orders/order/", {"q": str(found[1].pk)})
    paid = http.get("/admin/orders/order/", {"status__exact": "paid", "q": email})

    # then each page lists exactly the orders it should
    assert list(by_email.context["cl"].result_list) == found
    assert by_email.context["cl"].result_count == 2
    assert list(by_id.context["cl"].result_list) == [found[1]]
    assert list(paid.context["cl"].result_list) == [found[0]]
