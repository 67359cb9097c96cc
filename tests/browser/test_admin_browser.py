"""The staff journey through the admin in a real browser (SPEC §6), against a live server.

A staff user (not a superuser: only the permissions given below) logs in through the
login form, creates a product, edits its price, adds stock while an order placed through
the API sells units meanwhile (the adjustment keeps them sold), finds that order in the
orders admin and cancels it with the admin action; the database then shows the order
cancelled by staff and its units back in stock. Step screenshots go to
test-artifacts/browser/ (git-ignored) so the journey can be shown.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
import requests
from django.contrib.auth.models import Permission, User

from catalog.models import Product
from orders.models import CancelReason, Order, OrderStatus
from tests.browser.conftest import ARTIFACTS
from tests.factories import make_api_client
from tests.polling import slowness

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-horse-battery-staple"
# What a quiet machine needs for one page action or API request, with a margin; each use
# scales it by how slow the machine is right now (tests/polling.py).
ACTION_SECONDS = 15
STAFF_PERMISSIONS = [
    ("catalog", "view_product"),
    ("catalog", "add_product"),
    ("catalog", "change_product"),
    ("orders", "view_order"),
    ("orders", "change_order"),
]


def _staff_user() -> User:
    user = User.objects.create_user("shopkeeper", "shopkeeper@example.com", PASSWORD, is_staff=True)
    for app_label, codename in STAFF_PERMISSIONS:
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


class Steps:
    """Numbered screenshots of the journey."""

    def __init__(self, page) -> None:
        self.page = page
        self.number = 0
        for old in ARTIFACTS.glob("[0-9][0-9]-*.png"):
            old.unlink()

    def shot(self, name: str) -> None:
        self.number += 1
        self.page.screenshot(path=str(ARTIFACTS / f"{self.number:02d}-{name}.png"), full_page=True)


def _place_order(base_url: str, key: str, product: Product, quantity: int) -> dict:
    response = requests.post(
        f"{base_url}/api/v1/orders/",
        json={
            "email": "browser-buyer@example.com",
            "items": [{"product_id": str(product.pk), "quantity": quantity}],
        },
        headers={"X-API-Key": key, "Idempotency-Key": f"browser-{uuid.uuid4()}"},
        timeout=ACTION_SECONDS * slowness(),
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_staff_manage_a_product_and_cancel_an_api_order(live_server, browser_page):
    page = browser_page
    # Every wait of a page action or navigation (Playwright's default timeout), scaled.
    page.set_default_timeout(ACTION_SECONDS * 1000 * slowness())
    base = live_server.url
    _staff_user()
    _, api_key = make_api_client("browser-test-storefront")
    steps = Steps(page)

    # Log in through the login form.
    page.goto(f"{base}/admin/")
    page.fill("#id_username", "shopkeeper")
    page.fill("#id_password", PASSWORD)
    steps.shot("login")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")
    assert "shopkeeper" in page.inner_text("#user-tools").lower()
    steps.shot("admin-index")

    # Create a product with the add form.
    page.goto(f"{base}/admin/catalog/product/add/")
    page.fill("#id_sku", "BRW-001")
    page.fill("#id_name", "Browser-tested teapot")
    page.fill("#id_description", "Created by a real browser in CI.")
    page.fill("#id_price", "12.50")
    page.fill("#id_stock", "5")
    steps.shot("product-add-form")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    assert "Browser-tested teapot" in page.inner_text(".messagelist")
    steps.shot("product-created")
    product = Product.objects.get(sku="BRW-001")
    assert (product.price, product.stock, product.is_active) == (Decimal("12.50"), 5, True)

    # Edit its price.
    page.goto(f"{base}/admin/catalog/product/{product.pk}/change/")
    page.fill("#id_price", "15.00")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    product.refresh_from_db()
    assert product.price == Decimal("15.00")

    # Add stock: open the form (5 in stock), an API order sells 2 units meanwhile, then
    # save 25 -> the +20 is applied to the 3 left: 23, and the 2 units stay sold.
    page.goto(f"{base}/admin/catalog/product/{product.pk}/change/")
    assert page.input_value("#id_stock") == "5"
    assert page.input_value("input[name=stock_seen]") == "5"
    order = _place_order(base, api_key, product, quantity=2)
    assert order["status"] == "pending_payment"
    assert order["total"] == "30.00"  # the edited price
    page.fill("#id_stock", "25")
    steps.shot("stock-form")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist")
    steps.shot("stock-saved")
    assert "by orders while the form was open" in page.inner_text(".messagelist")
    product.refresh_from_db()
    assert product.stock == 23

    # The order placed through the API is in the orders admin; cancel it with the action.
    page.goto(f"{base}/admin/orders/order/?status__exact=pending_payment")
    row = page.locator("#result_list tbody tr", has_text="browser-buyer@example.com")
    assert row.count() == 1
    steps.shot("orders-list")
    row.locator("input[name=_selected_action]").check()
    page.select_option("select[name=action]", "cancel_orders")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist .success")
    assert "Cancelled 1 order(s)." in page.inner_text(".messagelist")
    steps.shot("order-cancelled")

    page.goto(f"{base}/admin/orders/order/{order['id']}/change/")
    assert "cancelled" in page.inner_text("#content-main").lower()
    steps.shot("order-detail")

    cancelled = Order.objects.get(pk=order["id"])
    assert cancelled.status == OrderStatus.CANCELLED
    assert cancelled.cancel_reason == CancelReason.STAFF_CANCELLED
    product.refresh_from_db()
    assert product.stock == 25  # the 2 reserved units are back
