"""UUIDs in API input have exactly one spelling (issue 9 item 16).

Bodies (`items[i].product_id`) accept only the canonical 8-4-4-4-12 string, in either case;
paths use Django's `uuid` converter, which matches only the lowercase canonical form, so any
other spelling of an id in a URL is an unknown resource (404 problem+json), never a 5xx and
never the resource itself.
"""

from __future__ import annotations

import json
import uuid

import pytest

from orders.models import Order
from tests.common.helpers import assert_problem
from tests.factories import make_product
from tests.orders.helpers import Snapshot, new_api, post_order, unique_email

pytestmark = pytest.mark.django_db


def _spellings(value: uuid.UUID) -> dict[str, object]:
    """Every non-canonical way DRF's UUIDField (Python's UUID()) would take `value`."""
    text = str(value)
    return {
        "json-integer": value.int,
        "integer-as-string": str(value.int),
        "dashless-hex": value.hex,
        "dashless-hex-upper": value.hex.upper(),
        "urn": value.urn,
        "urn-upper": value.urn.upper(),
        "braces": "{" + text + "}",
        "leading-space": " " + text,
        "trailing-newline": text + "\n",
        "dashes-misplaced": value.hex[:4] + "-" + value.hex[4:8] + text[8:],
        "extra-dash": text + "-",
        "too-short": text[:-1],
        "non-hex": "g" + text[1:],
        "fullwidth-digit": "\uff10" + text[1:],
        "float": float(value.int),
        "object": {"id": text},
        "list": [text],
        "null": None,
        "empty": "",
    }


SPELLINGS = list(_spellings(uuid.uuid4()))


@pytest.fixture
def http():
    return new_api(raise_request_exception=False)[2]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_non_canonical_product_id_is_400_naming_the_line(http, spelling):
    # given an active product in stock, referred to in line 1 by a non-canonical spelling
    product = make_product(stock=10)
    other = make_product(stock=10)
    body = {
        "email": unique_email(),
        "items": [
            {"product_id": str(other.pk), "quantity": 1},
            {"product_id": _spellings(product.pk)[spelling], "quantity": 1},
        ],
    }
    before = Snapshot.take()

    # when the order is posted
    response = post_order(http, body)

    # then 400 validation_error naming items[1].product_id, and nothing is reserved
    problem = assert_problem(response, status=400, code="validation_error")
    assert [e["field"] for e in problem["errors"]] == ["items[1].product_id"], problem
    after = Snapshot.take()
    assert (after.orders, after.stock) == (before.orders, before.stock)


@pytest.mark.parametrize("case", ["lower", "upper"])
def test_canonical_product_id_in_either_case_is_accepted(http, case):
    # given a product and its id in canonical form, lower or upper case
    product = make_product(stock=10)
    product_id = str(product.pk) if case == "lower" else str(product.pk).upper()

    # when the order is posted
    response = post_order(
        http, {"email": unique_email(), "items": [{"product_id": product_id, "quantity": 2}]}
    )

    # then it is created, and the id comes back in the canonical lowercase form
    assert response.status_code == 201, response.content
    body = json.loads(response.content)
    assert body["items"][0]["product_id"] == str(product.pk)
    product.refresh_from_db()
    assert product.stock == 8


def test_the_same_product_in_two_cases_is_listed_twice(http):
    # given one product written once in lower and once in upper case
    product = make_product(stock=10)
    body = {
        "email": unique_email(),
        "items": [
            {"product_id": str(product.pk), "quantity": 1},
            {"product_id": str(product.pk).upper(), "quantity": 1},
        ],
    }

    # when the order is posted
    response = post_order(http, body)

    # then the duplicate is caught on the parsed UUID, not the spelling
    problem = assert_problem(response, status=400, code="validation_error")
    assert [e["field"] for e in problem["errors"]] == ["items[1].product_id"]


def _path_spellings(value: uuid.UUID) -> list[str]:
    text = str(value)
    return [
        value.hex,
        text.upper(),
        value.urn,
        "{" + text + "}",
        str(value.int),
        text + "%0A",
        "%20" + text,
        text[:-1],
    ]


def test_non_canonical_ids_in_paths_never_reach_the_resource(http):
    # given a product and an order that exist
    product = make_product(stock=10)
    created = post_order(
        http, {"email": unique_email(), "items": [{"product_id": str(product.pk), "quantity": 1}]}
    )
    assert created.status_code == 201, created.content
    order = Order.objects.get()

    # when each is requested (and the order cancelled) through another spelling of its id
    answers = []
    for spelling in _path_spellings(product.pk):
        answers.append(http.get(f"/api/v1/products/{spelling}/"))
    for spelling in _path_spellings(order.pk):
        answers.append(http.get(f"/api/v1/orders/{spelling}/"))
        answers.append(http.post(f"/api/v1/orders/{spelling}/cancel/"))

    # then every answer is 404 problem+json, and the order is untouched
    for response in answers:
        assert_problem(response, status=404, code="not_found")
    order.refresh_from_db()
    assert order.status == "pending_payment"


@pytest.mark.parametrize(
    "query",
    [
        # A fixed id: xdist workers must collect the same parameters.
        "status=7d0c2f5e-3b7a-4f8e-9a51-2c6d8e4b1f09",
        "status=PENDING_PAYMENT",
        "status=pending_payment%00",
        "email=a%00@example.com",
        "cursor=%00",
        "cursor=not-base64!",
    ],
)
def test_order_list_filters_refuse_bad_values_without_a_5xx(http, query):
    # given the order list
    # when it is filtered with a value that is not a valid filter
    response = http.get(f"/api/v1/orders/?{query}")

    # then a 4xx problem+json (400 for a bad filter, 404 for a bad cursor), never a 5xx
    assert 400 <= response.status_code < 500, response.content
    assert response["Content-Type"] == "application/problem+json"
