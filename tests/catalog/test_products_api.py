"""GET /api/v1/products/ and /api/v1/products/{id}/ (SPEC §3)."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from decimal import Decimal

import pytest
from django.test import override_settings
from django.utils import timezone

from catalog.models import Product
from tests.common.helpers import assert_problem
from tests.factories import make_product

pytestmark = pytest.mark.django_db

LIST_URL = "/api/v1/products/"


def _detail_url(product_id) -> str:
    return f"/api/v1/products/{product_id}/"


def _walk(api, url: str) -> list[dict]:
    """Follow `next` links to the end; returns the pages' bodies."""
    pages = []
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.content
        pages.append(response.json())
        url = pages[-1]["next"]
    return pages


# --- pagination ------------------------------------------------------------------------


def test_cursor_pages_cover_every_product_once(api):
    # given 12 products, half of them sharing one created_at (ties must not skip or repeat)
    products = [make_product() for _ in range(12)]
    same_moment = timezone.now()
    Product.objects.filter(pk__in=[p.pk for p in products[3:9]]).update(created_at=same_moment)
    # when the client walks the list 5 at a time
    pages = _walk(api, f"{LIST_URL}?page_size=5")
    # then 5 + 5 + 2, every product exactly once
    assert [len(page["results"]) for page in pages] == [5, 5, 2]
    seen = [item["id"] for page in pages for item in page["results"]]
    assert len(seen) == len(set(seen)) == 12
    assert set(seen) == {str(p.pk) for p in products}
    assert pages[0]["previous"] is None
    assert pages[-1]["next"] is None


def test_previous_link_returns_the_page_before(api):
    # given 12 products and the second page of 5
    for _ in range(12):
        make_product()
    first = api.get(f"{LIST_URL}?page_size=5").json()
    second = api.get(first["next"]).json()
    # when the client follows `previous`
    back = api.get(second["previous"])
    # then it gets the first page again
    assert back.status_code == 200
    assert [i["id"] for i in back.json()["results"]] == [i["id"] for i in first["results"]]
    assert "page_size=5" in second["previous"]


def test_page_size_defaults_to_20_and_allows_100(api):
    for _ in range(25):
        make_product()
    assert len(api.get(LIST_URL).json()["results"]) == 20
    assert len(api.get(f"{LIST_URL}?page_size=100").json()["results"]) == 25


@pytest.mark.parametrize("page_size", ["0", "101", "abc", "-1", "1.5", "²", ""])
def test_bad_page_size_is_400_naming_page_size(api, page_size):
    response = api.get(LIST_URL, {"page_size": page_size})
    problem = assert_problem(response, status=400, code="validation_error")
    assert problem["errors"][0]["field"] == "page_size"


@pytest.mark.parametrize(
    "cursor",
    [
        "zzz",
        "not base64 at all!",
        base64.b64encode(b"o=-1").decode(),
        # decodes fine but its position is not a timestamp: must not reach the ORM
        base64.b64encode(b"p=garbage").decode(),
    ],
)
def test_invalid_cursor_is_400(api, cursor):
    make_product()
    response = api.get(LIST_URL, {"cursor": cursor})
    problem = assert_problem(response, status=400, code="validation_error")
    assert problem["errors"][0]["field"] == "cursor"


# --- search ----------------------------------------------------------------------------


def test_search_matches_name_substring_case_insensitively(api):
    # given
    wanted = make_product(name="Blue Coffee Mug", sku="MUG-001")
    make_product(name="Red Teapot", sku="TEA-001")
    # when
    response = api.get(LIST_URL, {"search": "coffee"})
    # then
    assert [item["id"] for item in response.json()["results"]] == [str(wanted.pk)]


def test_search_matches_sku_substring_case_insensitively(api):
    wanted = make_product(name="Teapot", sku="TEA-XL-042")
    make_product(name="Mug", sku="MUG-042")
    response = api.get(LIST_URL, {"search": "a-xl"})
    assert [item["id"] for item in response.json()["results"]] == [str(wanted.pk)]


def test_search_treats_like_wildcards_literally(api):
    make_product(name="Plain mug", sku="PLAIN-1")
    percent = make_product(name="100% cotton", sku="COT-1")
    response = api.get(LIST_URL, {"search": "%"})
    assert [item["id"] for item in response.json()["results"]] == [str(percent.pk)]


def test_search_never_shows_inactive_products(api):
    make_product(name="Hidden lamp", is_active=False)
    response = api.get(LIST_URL, {"search": "lamp"})
    assert response.json()["results"] == []


@pytest.mark.parametrize("search", ["a\x00b", "x" * 101])
def test_unsearchable_input_is_400_not_500(api, search):
    response = api.get(LIST_URL, {"search": search})
    problem = assert_problem(response, status=400, code="validation_error")
    assert problem["errors"][0]["field"] == "search"


# --- inactive and unknown --------------------------------------------------------------


def test_inactive_products_are_not_listed(api):
    active = make_product()
    make_product(is_active=False)
    ids = [item["id"] for item in api.get(LIST_URL).json()["results"]]
    assert ids == [str(active.pk)]


def test_inactive_product_is_404(api):
    product = make_product(is_active=False)
    assert_problem(api.get(_detail_url(product.pk)), status=404, code="not_found")


def test_unknown_product_is_404(api):
    assert_problem(api.get(_detail_url(uuid.uuid4())), status=404, code="not_found")


def test_product_reads_need_no_key_and_ignore_a_bad_one(api):
    product = make_product()
    api.credentials(HTTP_X_API_KEY="ok_wrong_key")
    assert api.get(LIST_URL).status_code == 200
    assert api.get(_detail_url(product.pk)).status_code == 200


# --- shape -----------------------------------------------------------------------------


@override_settings(SHOP_CURRENCY="EUR")
def test_product_shape_matches_the_spec(api):
    # given
    product = make_product(
        sku="MUG-1", name="Mug", description="Holds tea.", price=Decimal("12.50"), stock=7
    )
    # when
    body = api.get(_detail_url(product.pk)).json()
    listed = api.get(LIST_URL).json()["results"][0]
    # then
    assert body == listed
    assert set(body) == {
        "id",
        "sku",
        "name",
        "description",
        "price",
        "currency",
        "stock",
        "is_active",
        "created_at",
        "updated_at",
    }
    assert body["id"] == str(product.pk)
    assert (body["sku"], body["name"], body["description"]) == ("MUG-1", "Mug", "Holds tea.")
    assert body["price"] == "12.50"
    assert body["currency"] == "EUR"
    assert body["stock"] == 7
    assert body["is_active"] is True
    for field in ("created_at", "updated_at"):
        moment = datetime.fromisoformat(body[field])
        assert moment.tzinfo is not None
    assert datetime.fromisoformat(body["created_at"]) == product.created_at


def test_list_page_shape(api):
    make_product()
    body = api.get(LIST_URL).json()
    assert set(body) == {"next", "previous", "results"}
    assert body["next"] is None and body["previous"] is None
