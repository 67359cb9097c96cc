"""The operations page: who may see it, and that what it draws matches what happened."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from orders.models import OrderStatus
from orders.tasks import refresh_order_hour_rollups
from outbox.models import OutboxStatus
from tests.admin_helpers import logged_in, make_staff
from tests.operations.helpers import (
    PAGE,
    bars,
    cancel,
    cell,
    hour_start,
    move_orders,
    outbox_rows,
    panel,
    pay,
    place_orders,
    publish_all,
)

pytestmark = pytest.mark.django_db

INDEX = "/admin/"


@pytest.fixture
def superuser():
    return get_user_model().objects.create_superuser(username="root", password="x")


def test_page_draws_what_happened(superuser, django_assert_max_num_queries):
    # given: this hour 4 orders (2 paid, 1 cancelled, 1 pending); three hours ago 2 more
    # (1 paid, 1 cancelled) — paid at 12.50 each
    now_orders = place_orders(4)
    pay(now_orders[:2])
    cancel(now_orders[2:3])
    earlier = place_orders(2)
    pay(earlier[:1])
    cancel(earlier[1:])
    three_hours_ago = hour_start() - timedelta(hours=3) + timedelta(minutes=10)
    move_orders(earlier, created_at=three_hours_ago, paid_at=three_hours_ago)
    # ...every event so far published 2 s after its commit, a minute ago; then 2 events
    # pending for 90 s and 3 dead letters
    events = publish_all(
        published_at=timezone.now() - timedelta(minutes=1), delay=timedelta(seconds=2)
    )
    outbox_rows(2, status=OutboxStatus.PENDING, created_at=timezone.now() - timedelta(seconds=90))
    outbox_rows(3, status=OutboxStatus.DEAD, created_at=timezone.now(), last_error="boom")

    client = logged_in(superuser)

    # when: the session, the user, two queries per orders chart (the hourly rollup, the
    # hours it does not cover counted live) and one per outbox figure
    with django_assert_max_num_queries(8):
        response = client.get(PAGE)

    # then: one segment per (hour, status) present, totals in the figures beside the chart
    assert response.status_code == 200
    html = response.content.decode()
    orders = panel(html, "panel-orders")
    assert bars(orders) == 5
    assert (bars(orders, "paid"), bars(orders, "cancelled"), bars(orders, "pending_payment")) == (
        2,
        2,
        1,
    )
    assert cell(orders, "data-status", OrderStatus.PAID) == "3"
    assert cell(orders, "data-status", OrderStatus.CANCELLED) == "2"
    assert cell(orders, "data-status", OrderStatus.PENDING_PAYMENT) == "1"
    assert cell(orders, "data-status", "total") == "6"

    revenue = panel(html, f"panel-revenue-{settings.SHOP_CURRENCY}")
    assert bars(revenue, "revenue") == 2
    assert cell(revenue, "data-revenue", settings.SHOP_CURRENCY) == (
        f"{settings.SHOP_CURRENCY} 37.50"
    )

    outbox = panel(html, "panel-outbox")
    assert bars(outbox, "published") == 1  # all in one minute
    assert cell(outbox, "data-outbox", "published") == str(events)
    assert cell(outbox, "data-outbox", "mean-delay") == "2.0 s"
    assert cell(outbox, "data-outbox", "pending") == "2"
    assert cell(outbox, "data-outbox", "lag").startswith("1 min 3")
    assert cell(outbox, "data-outbox", "dead") == "3"
    assert 'href="/admin/outbox/outboxevent/?status__exact=dead"' in html
    assert 'class="ops-tile ops-alert" id="tile-dead"' in html
    assert "No orders in the last 24 hours" not in html


def test_empty_database_renders_empty_charts(superuser):
    response = logged_in(superuser).get(PAGE)

    assert response.status_code == 200
    html = response.content.decode()
    assert bars(html) == 0
    assert "No orders in the last 24 hours" in html
    assert "No payments in the last 24 hours" in html
    assert "Nothing published in the last hour" in html
    assert cell(html, "data-status", "total") == "0"
    assert cell(html, "data-outbox", "lag") == "—"
    assert 'class="ops-tile ops-ok" id="tile-dead"' in html


def test_superuser_sees_the_link_on_the_index(superuser):
    response = logged_in(superuser).get(INDEX)

    html = response.content.decode()
    assert f'href="{PAGE}"' in html
    assert "app-catalog" in html  # the stock app list is still there


def test_staff_without_the_permission_gets_403_and_no_link():
    clerk = logged_in(make_staff("clerk", "Catalog managers"))

    assert clerk.get(PAGE).status_code == 403
    index = clerk.get(INDEX)
    assert index.status_code == 200
    assert PAGE not in index.content.decode()
    assert "app-catalog" in index.content.decode()


def test_operations_group_grants_the_page_and_the_link():
    operator = logged_in(make_staff("operator", "Operations"))

    response = operator.get(PAGE)
    assert response.status_code == 200
    assert 'href="/admin/outbox/outboxevent/?status__exact=dead"' in response.content.decode()
    assert f'href="{PAGE}"' in operator.get(INDEX).content.decode()
    # ...and the list the dead-letter link opens
    assert operator.get("/admin/outbox/outboxevent/?status__exact=dead").status_code == 200


@pytest.mark.parametrize("who", ["anonymous", "not staff"])
def test_others_are_sent_to_the_login(who):
    client = Client()
    if who == "not staff":
        client = logged_in(get_user_model().objects.create_user("nobody"))

    response = client.get(PAGE)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_page_says_how_fresh_each_figure_is(superuser):
    # given orders this hour and three hours ago, and a page before any recount
    move_orders(place_orders(2), created_at=hour_start() - timedelta(hours=3))
    place_orders(1)
    client = logged_in(superuser)
    before = client.get(PAGE).content.decode()

    # when beat's task recounts the closed hours, and staff look again
    refresh_order_hour_rollups()
    after = client.get(PAGE).content.decode()

    # then before it every hour was counted live, and the page said so (asking about beat);
    # after it the closed hours come from the rollup "as counted at", the open hour live
    assert "All hours counted live for this page: no recent hourly rollup" in fresh(before)
    rolled_up = (
        r"Hours before \d\d:00 UTC as the hourly rollup counted them at \d\d:\d\d:\d\d UTC "
        r"\(.+ ago; recounted every 1 min\); \d\d:00 UTC to now counted live\."
    )
    assert re.fullmatch(rolled_up, fresh(after)), fresh(after)
    revenue = f'data-fresh="revenue-{settings.SHOP_CURRENCY}"'
    assert re.search(rf"<p[^>]*{revenue}>Hours before", after)
    assert re.search(r'data-fresh="outbox">Counted live for this page', after)
    # ...and the figures are the same either way
    assert cell(panel(before, "panel-orders"), "data-status", "total") == "3"
    assert cell(panel(after, "panel-orders"), "data-status", "total") == "3"


def fresh(html: str, figure: str = "orders") -> str:
    match = re.search(rf'<p class="ops-fresh" data-fresh="{figure}">([^<]*)</p>', html)
    assert match, f"no freshness line for {figure}"
    return match.group(1)
