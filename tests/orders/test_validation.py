"""Bad input to POST /api/v1/orders/ (SPEC §3): the documented code, and nothing changes."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from catalog.models import Product
from tests.common.helpers import assert_problem
from tests.factories import make_product
from tests.orders.helpers import (
    ORDERS_URL,
    Snapshot,
    new_api,
    order_body,
    post_order,
    post_order_without_key,
    unique_key,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def http():
    return new_api(raise_request_exception=False)[2]


@pytest.fixture
def product():
    return make_product(stock=10)


def _unchanged(before: Snapshot, *, idempotency_stored: bool = False) -> None:
    after = Snapshot.take()
    assert (after.orders, after.items, after.events, after.stock) == (
        before.orders,
        before.items,
        before.events,
        before.stock,
    )
    expected = before.idempotency_records + (1 if idempotency_stored else 0)
    assert after.idempotency_records == expected


# --- Idempotency-Key ---------------------------------------------------------------------


def test_missing_key_is_400(http, product):
    before = Snapshot.take()
    response = post_order_without_key(http, order_body([(product, 1)]))
    assert_problem(response, status=400, code="idempotency_key_missing")
    _unchanged(before)


@pytest.mark.parametrize(
    "key",
    ["x" * 256, "", '""', "bad\x01key", "tab\tkey", "caf\u00e9", "\x7f", '"' + "x" * 256 + '"'],
    ids=[
        "256-chars",
        "empty",
        "empty-quoted",
        "control-char",
        "tab",
        "non-ascii",
        "del",
        "quoted-256",
    ],
)
def test_invalid_key_is_400(http, product, key):
    before = Snapshot.take()
    response = post_order(http, order_body([(product, 1)]), key=key)
    assert_problem(response, status=400, code="idempotency_key_invalid")
    _unchanged(before)


def test_key_of_255_printable_characters_is_accepted(http, product):
    key = ("k" * 200 + " !~{}[]/=").ljust(255, "z")
    response = post_order(http, order_body([(product, 1)]), key=key)
    assert response.status_code == 201, response.content


# --- body --------------------------------------------------------------------------------


def _line(product, quantity):
    return {"product_id": str(product.pk), "quantity": quantity}


INVALID_BODIES = {
    "email-missing": (lambda p: {"items": [_line(p, 1)]}, "email"),
    "email-invalid": (lambda p: {"email": "not-an-email", "items": [_line(p, 1)]}, "email"),
    "email-not-a-string": (lambda p: {"email": 42, "items": [_line(p, 1)]}, "email"),
    "email-too-long": (
        lambda p: {"email": "a" * 250 + "@example.com", "items": [_line(p, 1)]},
        "email",
    ),
    "items-missing": (lambda p: {"email": "a@example.com"}, "items"),
    "items-empty": (lambda p: {"email": "a@example.com", "items": []}, "items"),
    "items-not-a-list": (lambda p: {"email": "a@example.com", "items": {"a": 1}}, "items"),
    "51-items": (
        lambda p: {
            "email": "a@example.com",
            "items": [{"product_id": str(uuid.uuid4()), "quantity": 1} for _ in range(51)],
        },
        "items",
    ),
    "quantity-0": (
        lambda p: {"email": "a@example.com", "items": [_line(p, 0)]},
        "items[0].quantity",
    ),
    "quantity-negative": (
        lambda p: {"email": "a@example.com", "items": [_line(p, -1)]},
        "items[0].quantity",
    ),
    "quantity-1001": (
        lambda p: {"email": "a@example.com", "items": [_line(p, 1001)]},
        "items[0].quantity",
    ),
    "quantity-string": (
        lambda p: {"email": "a@example.com", "items": [_line(p, "2")]},
        "items[0].quantity",
    ),
    "quantity-float": (
        lambda p: {"email": "a@example.com", "items": [_line(p, 2.5)]},
        "items[0].quantity",
    ),
    "quantity-true": (
        lambda p: {"email": "a@example.com", "items": [_line(p, True)]},
        "items[0].quantity",
    ),
    "quantity-null": (
        lambda p: {"email": "a@example.com", "items": [_line(p, None)]},
        "items[0].quantity",
    ),
    "quantity-missing": (
        lambda p: {"email": "a@example.com", "items": [{"product_id": str(p.pk)}]},
        "items[0].quantity",
    ),
    "product-id-invalid": (
        lambda p: {"email": "a@example.com", "items": [{"product_id": "nope", "quantity": 1}]},
        "items[0].product_id",
    ),
    # Only the canonical 8-4-4-4-12 string: DRF's UUIDField would take all of these.
    "product-id-integer": (
        lambda p: {"email": "a@example.com", "items": [{"product_id": p.pk.int, "quantity": 1}]},
        "items[0].product_id",
    ),
    "product-id-dashless-hex": (
        lambda p: {"email": "a@example.com", "items": [{"product_id": p.pk.hex, "quantity": 1}]},
        "items[0].product_id",
    ),
    "product-id-urn": (
        lambda p: {"email": "a@example.com", "items": [{"product_id": p.pk.urn, "quantity": 1}]},
        "items[0].product_id",
    ),
    "product-listed-twice": (
        lambda p: {"email": "a@example.com", "items": [_line(p, 1), _line(p, 2)]},
        "items[1].product_id",
    ),
    "line-not-an-object": (lambda p: {"email": "a@example.com", "items": [1]}, "items[0]"),
    "body-list": (lambda p: [{"email": "a@example.com", "items": [_line(p, 1)]}], ""),
    "body-string": (lambda p: "an order", ""),
    "body-number": (lambda p: 42, ""),
    "body-null": (lambda p: None, ""),
}


@pytest.mark.parametrize("case", list(INVALID_BODIES))
def test_invalid_body_is_400_validation_error(http, product, case):
    # given an invalid body
    build, field = INVALID_BODIES[case]
    before = Snapshot.take()

    # when it is posted
    response = post_order(http, build(product))

    # then 400 naming the field, and nothing changes (not even a stored key)
    problem = assert_problem(response, status=400, code="validation_error")
    assert field in [error["field"] for error in problem["errors"]], problem["errors"]
    _unchanged(before)


@pytest.mark.parametrize(
    "raw",
    ['{"email": ', "not json", "{'email': 'a@example.com'}", '{"quantity": NaN}', "[" * 50000],
    ids=["truncated", "text", "single-quotes", "nan", "deeply-nested"],
)
def test_malformed_json_is_400(http, raw):
    # "the body is a JSON object" (SPEC §3): text that is no JSON at all fails it too
    before = Snapshot.take()
    response = post_order(http, None, raw=raw)
    assert_problem(response, status=400, code="validation_error")
    _unchanged(before)


def test_non_json_content_type_is_415(http, product):
    before = Snapshot.take()
    response = http.post(
        ORDERS_URL,
        data="email=a@example.com",
        content_type="application/x-www-form-urlencoded",
        HTTP_IDEMPOTENCY_KEY=unique_key(),
    )
    assert_problem(response, status=415, code="unsupported_media_type")
    _unchanged(before)


# --- business refusals -------------------------------------------------------------------


def test_unknown_and_inactive_products_are_422_naming_them(http, product):
    # given an unknown and an inactive product next to an available one
    inactive = make_product(is_active=False, stock=10)
    unknown = uuid.uuid4()
    before = Snapshot.take()

    # when ordered
    response = post_order(http, order_body([(product, 1), (inactive, 1), (unknown, 1)]))

    # then 422 names both, and nothing is reserved
    problem = assert_problem(response, status=422, code="product_unavailable")
    assert sorted(problem["product_ids"]) == sorted([str(inactive.pk), str(unknown)])
    _unchanged(before, idempotency_stored=True)


def test_insufficient_stock_is_409_naming_each_short_product(http):
    # given two short products and one with enough stock
    plenty = make_product(stock=10)
    short_a = make_product(stock=1)
    short_b = make_product(stock=0)
    before = Snapshot.take()

    # when all three are ordered
    response = post_order(http, order_body([(plenty, 5), (short_a, 2), (short_b, 1)]))

    # then 409 names each short product with its units available; nothing is reserved
    problem = assert_problem(response, status=409, code="insufficient_stock")
    shortages = {s["product_id"]: s for s in problem["products"]}
    assert set(shortages) == {str(short_a.pk), str(short_b.pk)}
    assert shortages[str(short_a.pk)]["available"] == 1
    assert shortages[str(short_b.pk)]["available"] == 0
    assert shortages[str(short_a.pk)]["requested"] == 2
    _unchanged(before, idempotency_stored=True)
    assert Product.objects.get(pk=plenty.pk).stock == 10


# --- property: random bad input never breaks anything ----------------------------------

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_json = st.recursive(
    _json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_quantity = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
_email = st.one_of(
    st.emails(), st.text(max_size=30), st.integers(), st.none(), st.just("a@example.com")
)


@st.composite
def _order_like(draw, product_ids):
    """Shaped like an order, with any field possibly wrong, and products that cannot sell."""
    line = st.fixed_dictionaries(
        {},
        optional={
            "product_id": st.one_of(st.sampled_from(product_ids), st.uuids().map(str), _json),
            "quantity": _quantity,
        },
    )
    items = st.one_of(st.lists(line, max_size=6), _json)
    body = draw(st.fixed_dictionaries({}, optional={"email": _email, "items": items}))
    if draw(st.booleans()):
        body[draw(st.text(max_size=8))] = draw(_json)
    return body


@hypothesis_settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_bad_input_never_fails_the_server_or_changes_anything(
    http, unsellable_product_ids, data
):
    # given products that can never be sold: one inactive, one out of stock
    before = Snapshot.take()
    body = data.draw(
        st.one_of(
            _order_like(unsellable_product_ids).map(json.dumps),
            _json.map(json.dumps),
            st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
        ),
        label="body",
    )
    key = data.draw(
        st.one_of(st.uuids().map(str), st.text(max_size=300), st.just("fixed-key")), label="key"
    )

    # when it is posted
    response = post_order(http, None, key=key, raw=body)

    # then a documented client error, never a 5xx, and no order, item, event or stock change
    assert response.status_code in {400, 409, 415, 422}, response.content
    assert response["Content-Type"] == "application/problem+json"
    after = Snapshot.take()
    assert (after.orders, after.items, after.events, after.stock) == (
        before.orders,
        before.items,
        before.events,
        before.stock,
    )


@pytest.fixture
def unsellable_product_ids(settings):
    """Products that cannot be sold (so nothing can change), and no rate limits in the way."""
    settings.ORDER_RATE_LIMIT = "100000/60s"
    settings.API_RATE_LIMIT = "100000/60s"
    inactive = make_product(is_active=False, stock=10)
    empty = make_product(stock=0)
    return [str(inactive.pk), str(empty.pk)]


def test_order_whose_total_does_not_fit_is_400_and_changes_nothing(http):
    # given a product so expensive that 1000 units overflow NUMERIC(12,2)
    product = make_product(price=Decimal("20000000.00"), stock=1000)
    before = Snapshot.take()

    # when 1000 are ordered (each field valid on its own)
    response = post_order(http, order_body([(product, 1000)]), key="huge")

    # then a validation error, not a 500, and the key is free for a smaller order
    problem = assert_problem(response, status=400, code="validation_error")
    assert problem["errors"][0]["field"] == "items"
    _unchanged(before)
    assert post_order(http, order_body([(product, 1)]), key="huge").status_code == 201
