"""The 201 of an order creation is rendered from what the creation already holds in memory:
byte for byte the body a GET returns right after, and no read of the order back."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import make_product
from tests.orders.helpers import detail_url, new_api, order_body, post_order

pytestmark = pytest.mark.django_db

# The tables whose rows the 201 shows: reading any of them back after the order's INSERT
# would be a re-read of what the creation just wrote.
_RENDERED_TABLES = re.compile(r'"(orders_order|orders_orderitem|payments_payment)"')


def _products_out_of_sku_order():
    # Created (and requested) in an order that is not the sku order; upper and lower case
    # mixed, so that a sort that is not PostgreSQL's (code point, under C.UTF-8) shows.
    return [
        make_product(sku="m-middle", price=Decimal("1049.10"), stock=50),
        make_product(sku="Z-upper", price=Decimal("0.99"), stock=50),
        make_product(sku="a-lower", price=Decimal("12.35"), stock=50),
        make_product(sku="B2-upper", price=Decimal("7.05"), stock=50),
    ]


def test_the_201_body_is_byte_identical_to_the_get_that_follows():
    # given products whose skus sort differently from the request's lines, prices with cents
    _, _, http = new_api()
    products = _products_out_of_sku_order()
    for quantities in [(3, 1, 7, 2), (1, 1, 1, 1), (13, 4, 2, 9)]:
        # when an order is created and read back at once
        created = post_order(http, order_body(zip(products, quantities, strict=True)))
        assert created.status_code == 201, created.content
        fetched = http.get(detail_url(created.json()["id"]))
        # then both bodies are the same bytes (items by sku, decimals, microsecond timestamps)
        assert fetched.status_code == 200
        assert created.content == fetched.content
        skus = [item["sku"] for item in created.json()["items"]]
        assert skus == ["B2-upper", "Z-upper", "a-lower", "m-middle"]


def test_a_creation_reads_nothing_back_after_inserting_the_order():
    # given an API client and products
    _, _, http = new_api()
    products = _products_out_of_sku_order()
    body = order_body(zip(products, (1, 2, 3, 4), strict=True))
    # when an order is created through the API
    with CaptureQueriesContext(connection) as captured:
        created = post_order(http, body)
    assert created.status_code == 201, created.content
    # then after the order's INSERT (alone, or in the one-round-trip unit of work) no SELECT
    # touches the order, its items or its payment
    statements = [query["sql"] for query in captured.captured_queries]
    inserted_at = next(
        index for index, sql in enumerate(statements) if 'INSERT INTO "orders_order"' in sql
    )
    rereads = [
        sql
        for sql in statements[inserted_at + 1 :]
        if sql.lstrip().upper().startswith("SELECT") and _RENDERED_TABLES.search(sql)
    ]
    assert rereads == []
