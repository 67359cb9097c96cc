"""The admin as staff meet it: it names the service, "View site" opens the API docs, the
operations page is in the sidebar, order ids fit their column, links follow the URLconf."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.urls import clear_script_prefix, reverse, set_script_prefix

from orders.admin import OrderAdmin
from orders.models import Order
from tests.admin_helpers import logged_in, make_staff
from tests.operations.helpers import place_orders

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser():
    return get_user_model().objects.create_superuser(username="root", password="x")


def _sidebar(html: str) -> str:
    match = re.search(r'<nav class="sticky" id="nav-sidebar".*?</nav>', html, re.S)
    assert match, "the page has a sidebar"
    return match[0]


def test_header_and_title_name_the_service(superuser):
    html = logged_in(superuser).get(reverse("admin:index")).content.decode()
    assert "Orders service administration" in html
    title = re.search(r"<title>(.*?)</title>", html, re.S)
    assert title and "Orders service admin" in title[1]
    assert "Django administration" not in html and "Django site admin" not in html


def test_view_site_opens_the_api_docs(superuser):
    html = logged_in(superuser).get(reverse("admin:index")).content.decode()
    assert f'<a href="{reverse("swagger-ui")}">View site</a>' in html


def test_the_sidebar_links_the_operations_page_for_staff_allowed_to_see_it(superuser):
    # given a page of the admin that shows the sidebar, open to both users below
    page = reverse("admin:catalog_product_changelist")
    # when a superuser and a member of staff without the page permission open it
    allowed = _sidebar(logged_in(superuser).get(page).content.decode())
    other = make_staff("no-ops", "Read-only staff")
    not_allowed = _sidebar(logged_in(other).get(page).content.decode())
    # then only the first sees the operations page in the sidebar
    assert f'href="{reverse("admin-operations")}"' in allowed
    assert reverse("admin-operations") not in not_allowed


def test_the_operations_page_is_marked_current_in_its_own_sidebar(superuser):
    html = logged_in(superuser).get(reverse("admin-operations")).content.decode()
    assert 'aria-current="page">Operations dashboard</a>' in _sidebar(html)


def test_the_order_changelist_shows_a_short_id_with_the_full_id_in_its_title(superuser):
    # given an order
    (order,) = place_orders(1)
    # when staff list orders
    html = logged_in(superuser).get(reverse("admin:orders_order_changelist")).content.decode()
    # then its id reads as 8 hex digits, the full id in the tooltip, linked to the order
    short = f'<span class="order-id" title="{order.pk}">{str(order.pk)[:8]}…</span>'
    assert short in html
    assert f">{order.pk}<" not in html
    assert reverse("admin:orders_order_change", args=[order.pk]) in html


def test_the_order_pages_links_follow_the_urlconf_wherever_the_service_is_mounted():
    # given the service mounted under a path prefix (SCRIPT_NAME behind a proxy)
    (order,) = place_orders(1)
    set_script_prefix("/mounted/")
    try:
        # when the order's payment links are drawn
        links = str(OrderAdmin(Order, admin_site=None).payment_links(order))  # type: ignore[arg-type]
    finally:
        clear_script_prefix()
    # then they are the URLconf's, prefix included
    assert f"href='/mounted/admin/payments/payment/?q={order.pk}'" in links
    assert f"href='/mounted/admin/payments/webhookinboxentry/?q={order.pk}'" in links
