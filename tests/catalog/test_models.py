"""The database itself refuses negative stock and non-positive prices (SPEC §2)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.db.models import F

from catalog.models import Product
from tests.factories import make_product

pytestmark = pytest.mark.django_db


def _violated_constraint(excinfo) -> str:
    return excinfo.value.__cause__.diag.constraint_name


def test_stock_can_go_down_to_zero():
    # given 3 units
    product = make_product(stock=3)
    # when all three are taken with an F() update
    Product.objects.filter(pk=product.pk).update(stock=F("stock") - 3)
    # then
    product.refresh_from_db()
    assert product.stock == 0


def test_stock_below_zero_is_refused_by_the_database_and_the_row_is_unchanged():
    # given 3 units
    product = make_product(stock=3)
    # when an F() update would take 4 (no Python check in the way)
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        Product.objects.filter(pk=product.pk).update(stock=F("stock") - 4)
    # then the CHECK constraint said no and nothing changed
    assert _violated_constraint(excinfo) == "product_stock_non_negative"
    product.refresh_from_db()
    assert product.stock == 3


def test_creating_a_product_with_negative_stock_is_refused():
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        make_product(stock=-1)
    assert _violated_constraint(excinfo) == "product_stock_non_negative"


@pytest.mark.parametrize("price", [Decimal("0.00"), Decimal("-0.01")])
def test_a_price_that_is_not_positive_is_refused_and_the_row_is_unchanged(price):
    # given a product at 12.50
    product = make_product(price=Decimal("12.50"))
    # when its price is set to zero or below
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        Product.objects.filter(pk=product.pk).update(price=price)
    # then
    assert _violated_constraint(excinfo) == "product_price_positive"
    product.refresh_from_db()
    assert product.price == Decimal("12.50")


def test_an_f_update_that_makes_the_price_zero_is_refused():
    product = make_product(price=Decimal("5.00"))
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        Product.objects.filter(pk=product.pk).update(price=F("price") - Decimal("5.00"))
    assert _violated_constraint(excinfo) == "product_price_positive"
    product.refresh_from_db()
    assert product.price == Decimal("5.00")


def test_the_smallest_positive_price_is_accepted():
    product = make_product(price=Decimal("0.01"))
    product.refresh_from_db()
    assert product.price == Decimal("0.01")


def test_sku_is_unique():
    make_product(sku="DUP-1")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_product(sku="DUP-1")
