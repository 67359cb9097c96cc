"""The product admin: stale saves never lose stock, every change is audited, groups hold."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.db.models import F
from django.test import Client
from django.urls import reverse

from catalog.models import Product
from tests.admin_helpers import admin_form, logged_in, make_staff
from tests.factories import make_product

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:catalog_product_changelist")
ADD = reverse("admin:catalog_product_add")


def change_url(product: Product) -> str:
    return reverse("admin:catalog_product_change", args=[product.pk])


# --- helpers ------------------------------------------------------------------------------


def open_form(client: Client, url: str) -> dict[str, str]:
    return admin_form(client, url, form_id="product_form")


def sell(product: Product, units: int) -> None:
    """What an order does to stock: a relative F() update that bypasses the model."""
    Product.objects.filter(pk=product.pk).update(stock=F("stock") - units)


@pytest.fixture
def manager():
    return make_staff("manager", "Catalog managers")


@pytest.fixture
def manager_client(manager) -> Client:
    return logged_in(manager)


# --- the change form ----------------------------------------------------------------------


def test_change_form_carries_the_stock_seen_as_a_hidden_field(manager_client):
    # given a product with 10 units
    product = make_product(stock=10)

    # when a catalog manager opens its change page
    response = manager_client.get(change_url(product))

    # then the rendered form carries the stock it was opened with, hidden, and explains it
    html = response.content.decode()
    hidden = re.search(r'<input[^>]*name="stock_seen"[^>]*>', html)
    assert hidden is not None
    assert 'type="hidden"' in hidden.group(0)
    assert 'value="10"' in hidden.group(0)
    assert "applied as an adjustment, not an overwrite" in html
    assert 'name="stock" value="10"' in html


def test_stale_save_applies_the_staff_change_as_an_adjustment(manager_client):
    # given a manager opened the form of a product with 10 units at 10.00
    product = make_product(stock=10, price=Decimal("10.00"))
    form = open_form(manager_client, change_url(product))
    seen = int(form["stock_seen"])
    assert seen == 10

    # and an order sold 3 units while the form was open
    sell(product, 3)

    # when they save a new price and stock = what they saw + 5
    form.update(price="12.50", stock=str(seen + 5))
    response = manager_client.post(change_url(product), form)

    # then their +5 lands on top of the 7 left, and the price is updated
    assert response.status_code == 302, response.content.decode()[:2000]
    product.refresh_from_db()
    assert product.stock == seen - 3 + 5 == 12
    assert product.price == Decimal("12.50")


def test_stale_save_explains_the_adjustment_to_the_staff_user(manager_client):
    # given a stale form (3 sold after opening)
    product = make_product(stock=10)
    form = open_form(manager_client, change_url(product))
    sell(product, 3)

    # when the manager saves stock 15 and follows the redirect
    form.update(stock="15")
    response = manager_client.post(change_url(product), form, follow=True)

    # then they are told what happened to their number
    text = response.content.decode()
    assert "Stock changed from 10 to 7 by orders while the form was open" in text
    assert "adjusted by +5, so it is now 12" in text


def test_saving_only_a_price_keeps_stock_sold_meanwhile(manager_client):
    # given a manager opened the form of a product with 10 units
    product = make_product(stock=10, price=Decimal("10.00"))
    form = open_form(manager_client, change_url(product))

    # and an order sold 3 units meanwhile
    sell(product, 3)

    # when they save with only the price changed (the stock box still says 10)
    form["price"] = "11.00"
    response = manager_client.post(change_url(product), form)

    # then the 3 sold units stay sold
    assert response.status_code == 302
    product.refresh_from_db()
    assert product.stock == 7
    assert product.price == Decimal("11.00")
    # and the admin log does not claim the manager changed the stock
    entry = LogEntry.objects.filter(object_id=str(product.pk), action_flag=CHANGE).get()
    assert "Price" in entry.get_change_message()
    assert "Stock" not in entry.get_change_message()


def test_a_field_changed_by_someone_else_meanwhile_is_not_overwritten(manager_client):
    # given a manager opened the form
    product = make_product(stock=10, name="Mug", price=Decimal("10.00"))
    form = open_form(manager_client, change_url(product))

    # and a colleague renamed the product meanwhile
    Product.objects.filter(pk=product.pk).update(name="Enamel mug")

    # when the manager saves only a new price
    form["price"] = "11.00"
    response = manager_client.post(change_url(product), form)

    # then the colleague's name survives
    assert response.status_code == 302
    product.refresh_from_db()
    assert (product.name, product.price) == ("Enamel mug", Decimal("11.00"))


def test_adjustment_that_would_go_negative_is_a_form_error_and_changes_nothing(manager_client):
    # given a manager opened the form at 10 units, and 8 were sold meanwhile (2 left)
    product = make_product(stock=10, price=Decimal("10.00"))
    form = open_form(manager_client, change_url(product))
    sell(product, 8)
    history_before = product.history.count()

    # when they save stock 5 (-5, more than the 2 left) together with a new price
    form.update(stock="5", price="99.00")
    response = manager_client.post(change_url(product), form)

    # then the form comes back with the error on the stock field
    assert response.status_code == 200
    assert "stock" in response.context["adminform"].form.errors
    assert "would make it negative" in response.content.decode()
    # and nothing changed: stock, price, history, admin log
    product.refresh_from_db()
    assert (product.stock, product.price) == (2, Decimal("10.00"))
    assert product.history.count() == history_before
    assert not LogEntry.objects.filter(object_id=str(product.pk)).exists()


def test_a_reduction_within_the_current_stock_is_applied(manager_client):
    # given the form opened at 10, and 2 sold meanwhile (8 left)
    product = make_product(stock=10)
    form = open_form(manager_client, change_url(product))
    sell(product, 2)

    # when the manager writes off 4 units (enters 6)
    form["stock"] = "6"
    response = manager_client.post(change_url(product), form)

    # then 8 - 4 = 4 remain
    assert response.status_code == 302
    product.refresh_from_db()
    assert product.stock == 4


def test_a_post_without_the_stock_seen_is_refused(manager_client):
    # given a change form posted without its hidden stock_seen (e.g. a hand-made request)
    product = make_product(stock=10)
    form = open_form(manager_client, change_url(product))
    del form["stock_seen"]

    # when it is saved with a new stock
    form["stock"] = "50"
    response = manager_client.post(change_url(product), form)

    # then it is refused instead of being taken as an overwrite
    assert response.status_code == 200
    assert "reload the page" in response.content.decode()
    product.refresh_from_db()
    assert product.stock == 10


# --- audit --------------------------------------------------------------------------------


def test_a_staff_save_is_recorded_with_who_what_and_why(manager, manager_client):
    # given a product
    product = make_product(stock=10, price=Decimal("10.00"))
    form = open_form(manager_client, change_url(product))

    # when the manager changes price and stock
    form.update(price="12.00", stock="13")
    manager_client.post(change_url(product), form)

    # then a history row names the manager, the reason, and the changed fields
    latest, previous = product.history.all()[:2]
    assert latest.history_user == manager
    assert latest.history_type == "~"
    assert latest.history_change_reason == "staff edit; stock adjusted by +3"
    delta = latest.diff_against(previous)
    changes = {change.field: (change.old, change.new) for change in delta.changes}
    assert changes == {"price": (Decimal("10.00"), Decimal("12.00")), "stock": (10, 13)}
    # and the admin's own log has the change too
    assert LogEntry.objects.filter(
        object_id=str(product.pk), user=manager, action_flag=CHANGE
    ).exists()

    # and the history page shows who, why and the diff
    page = manager_client.get(reverse("admin:catalog_product_history", args=[product.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "manager" in html
    assert "staff edit; stock adjusted by +3" in html
    assert re.search(r"<strong>Price:</strong>\s*10.00\s*&nbsp;&rarr;&nbsp;&nbsp;12.00", html)
    assert re.search(r"<strong>Stock:</strong>\s*10\s*&nbsp;&rarr;&nbsp;&nbsp;13", html)


def test_bulk_deactivate_writes_a_history_row_per_product(manager, manager_client):
    # given two active products and one already inactive
    a, b = make_product(), make_product()
    c = make_product(is_active=False)

    # when the manager deactivates all three from the list
    response = manager_client.post(
        CHANGELIST,
        {"action": "deactivate_selected", "_selected_action": [a.pk, b.pk, c.pk]},
        follow=True,
    )

    # then the two active ones are deactivated, each with its own history row
    assert response.status_code == 200
    assert "Deactivated 2 product(s)." in response.content.decode()
    for product in (a, b):
        product.refresh_from_db()
        assert product.is_active is False
        row = product.history.first()
        assert (row.history_user, row.history_change_reason) == (manager, "deactivated")
        assert LogEntry.objects.filter(object_id=str(product.pk), user=manager).exists()
    # and the one that was already inactive is left alone
    assert c.history.count() == 1


def test_bulk_activate(manager, manager_client):
    # given an inactive product
    product = make_product(is_active=False)

    # when the manager activates it from the list
    manager_client.post(
        CHANGELIST, {"action": "activate_selected", "_selected_action": [product.pk]}
    )

    # then it is active, and the history says who did it
    product.refresh_from_db()
    assert product.is_active is True
    assert product.history.first().history_user == manager


def test_adding_a_product_goes_through_the_service_and_is_recorded(manager, manager_client):
    # given the add form
    form = open_form(manager_client, ADD)

    # when a manager fills it in
    form.update(sku="NEW-1", name="New thing", price="5.00", stock="7", is_active="on")
    response = manager_client.post(ADD, form)

    # then the product exists, with a "created" history row naming the manager
    assert response.status_code == 302, response.content.decode()[:2000]
    product = Product.objects.get(sku="NEW-1")
    assert (product.stock, product.price, product.is_active) == (7, Decimal("5.00"), True)
    row = product.history.get()
    assert (row.history_type, row.history_user, row.history_change_reason) == (
        "+",
        manager,
        "created",
    )


def test_the_database_constraints_show_as_form_errors(manager_client):
    # given the add form
    form = open_form(manager_client, ADD)

    # when a price of zero is entered
    form.update(sku="ZERO-1", name="Free", price="0.00", stock="1")
    response = manager_client.post(ADD, form)

    # then the form says so and nothing is created
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert not Product.objects.filter(sku="ZERO-1").exists()


# --- the list -----------------------------------------------------------------------------


def test_list_shows_the_columns_and_searches_by_name_or_sku(manager_client):
    # given two products
    make_product(sku="MUG-1", name="Enamel mug", price=Decimal("12.50"), stock=40)
    make_product(sku="TEE-1", name="Cotton tee")

    # when the list is searched by sku, then by part of a name
    by_sku = manager_client.get(CHANGELIST, {"q": "mug-1"})
    by_name = manager_client.get(CHANGELIST, {"q": "cotton"})

    # then each finds just its product, with sku, name, price, stock, active, updated
    assert [p.sku for p in by_sku.context["cl"].result_list] == ["MUG-1"]
    assert [p.sku for p in by_name.context["cl"].result_list] == ["TEE-1"]
    html = by_sku.content.decode()
    for column in ("column-sku", "column-name", "column-price", "column-stock"):
        assert column in html
    assert "column-is_active" in html and "column-updated_at" in html
    assert "12.50" in html


def test_list_filters_by_active(manager_client):
    # given an active and an inactive product
    make_product(sku="ON-1")
    make_product(sku="OFF-1", is_active=False)

    # when the list is filtered to inactive ones
    response = manager_client.get(CHANGELIST, {"is_active__exact": "0"})

    # then only the inactive one is listed
    assert [p.sku for p in response.context["cl"].result_list] == ["OFF-1"]


# --- permissions --------------------------------------------------------------------------


def test_read_only_staff_can_view_but_not_change_or_add():
    # given a staff user in "Read-only staff" and a product
    viewer = logged_in(make_staff("viewer", "Read-only staff"))
    product = make_product(stock=10, price=Decimal("10.00"))

    # when they open the list, the product and its history
    # then they can read them
    assert viewer.get(CHANGELIST).status_code == 200
    page = viewer.get(change_url(product))
    assert page.status_code == 200
    assert 'name="stock_seen"' not in page.content.decode()
    history = reverse("admin:catalog_product_history", args=[product.pk])
    assert viewer.get(history).status_code == 200

    # but posting a change or opening the add page is forbidden
    response = viewer.post(
        change_url(product),
        {"sku": product.sku, "name": "x", "price": "1.00", "stock": "99", "stock_seen": "10"},
    )
    assert response.status_code == 403
    assert viewer.get(ADD).status_code == 403
    assert (
        viewer.post(ADD, {"sku": "X-1", "name": "x", "price": "1", "stock": "1"}).status_code == 403
    )
    # and the bulk actions are not theirs to run
    viewer.post(CHANGELIST, {"action": "deactivate_selected", "_selected_action": [product.pk]})
    product.refresh_from_db()
    assert (product.stock, product.price, product.is_active) == (10, Decimal("10.00"), True)
    assert product.history.count() == 1


def test_history_revert_form_cannot_be_posted():
    # given a read-only staff user and a product with a history row
    viewer = logged_in(make_staff("viewer", "Read-only staff"))
    product = make_product(stock=10, price=Decimal("10.00"))
    row = product.history.get()
    url = reverse("admin:catalog_product_simple_history", args=[product.pk, row.pk])

    # when they open a past version, then try to post it back (simple_history's revert)
    assert viewer.get(url).status_code == 200
    response = viewer.post(
        url,
        {"sku": product.sku, "name": "hacked", "price": "1.00", "stock": "999", "is_active": "on"},
    )

    # then it is refused and nothing changes
    assert response.status_code == 403
    name = product.name
    product.refresh_from_db()
    assert (product.name, product.stock) == (name, 10)


def test_staff_without_a_group_cannot_see_products():
    # given a staff user in no group
    nobody = logged_in(make_staff("nobody"))

    # when they open the product list
    response = nobody.get(CHANGELIST)

    # then they are refused
    assert response.status_code == 403


def test_superuser_sees_everything_but_cannot_delete_products():
    # given a superuser and a product
    root = logged_in(make_staff("root", superuser=True))
    product = make_product()

    # when they open list, add, change and history pages
    # then all answer
    for url in (
        CHANGELIST,
        ADD,
        change_url(product),
        reverse("admin:catalog_product_history", args=[product.pk]),
    ):
        assert root.get(url).status_code == 200, url
    # and deleting is not offered to anyone: products are deactivated instead
    assert root.get(reverse("admin:catalog_product_delete", args=[product.pk])).status_code == 403


def test_catalog_managers_cannot_manage_api_clients(manager_client):
    # given a catalog manager
    # when they open the API clients list
    response = manager_client.get(reverse("admin:clients_apiclient_changelist"))

    # then they are refused: that is another group's job
    assert response.status_code == 403
