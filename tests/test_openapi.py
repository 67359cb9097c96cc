"""OpenAPI 3 schema and the docs pages, served without internet (SPEC §3 Endpoints)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
import yaml
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


def test_spectacular_validates_the_schema_without_warnings(tmp_path):
    # when the schema is generated strictly (any warning fails the command)
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    # then it is OpenAPI 3 and documents the product endpoints and their problems
    schema = yaml.safe_load(target.read_text())
    assert schema["openapi"].startswith("3.")
    assert {"/api/v1/products/", "/api/v1/products/{product_id}/"} <= schema["paths"].keys()
    detail = schema["paths"]["/api/v1/products/{product_id}/"]["get"]["responses"]
    assert "application/problem+json" in detail["404"]["content"]


def test_schema_endpoint_serves_a_valid_openapi_document(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    validate_schema(yaml.safe_load(response.content))


def test_schema_endpoint_serves_json_on_request(client):
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    schema = json.loads(response.content)
    validate_schema(schema)
    assert schema["info"]["title"] == "Orders service API"


def test_views_using_the_api_key_declare_the_security_scheme():
    # given a urlconf with a view protected by X-API-Key (as the order views will be)
    GENERATOR_STATS.reset()
    # when its schema is generated
    schema = SchemaGenerator(urlconf="tests.common.urls_for_tests").get_schema(public=True)
    # then the scheme is known (no "could not resolve authenticator" warning) and valid
    assert not GENERATOR_STATS, "schema generation warned"
    validate_schema(schema)
    assert schema["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    assert schema["paths"]["/probe/protected/"]["get"]["security"] == [{"ApiKeyAuth": []}]


class _Assets(HTMLParser):
    """Collects every URL a page would fetch (src=, href=)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def _assets(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_docs_pages_reference_only_local_static_files_that_are_served(client, path):
    # when the page is fetched
    response = client.get(path)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    # then it names no CDN and no other host at all
    for cdn in ("jsdelivr", "unpkg", "cdnjs", "googleapis", "gstatic"):
        assert cdn not in html
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", html)
    urls = _assets(html)
    assert urls, "the page loads no assets?"
    # and every asset is a local static file the app itself serves
    for url in urls:
        assert url.startswith("/static/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert b"".join(asset.streaming_content)


def test_swagger_ui_points_at_the_local_schema(client):
    html = client.get("/api/docs/").content.decode()
    assert '"/api/schema/"' in html


ANY_ID = "4b6f2c1e-0a8e-4b7f-9d3a-2f1e5c6d7a8b"


@pytest.mark.parametrize(
    ("name", "kwargs", "path"),
    [
        ("product-list", {}, "/api/v1/products/"),
        ("product-detail", {"product_id": ANY_ID}, f"/api/v1/products/{ANY_ID}/"),
        ("order-list", {}, "/api/v1/orders/"),
        ("order-detail", {"order_id": ANY_ID}, f"/api/v1/orders/{ANY_ID}/"),
        ("order-cancel", {"order_id": ANY_ID}, f"/api/v1/orders/{ANY_ID}/cancel/"),
    ],
)
def test_the_api_routes_keep_their_names_and_paths(name, kwargs, path):
    # when a route is reversed by the name it had before the routers
    # then it is the path SPEC §3 lists
    assert reverse(name, kwargs=kwargs) == path
