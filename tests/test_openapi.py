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
    scheme = schema["components"]["securitySchemes"]["ApiKeyAuth"]
    assert {k: scheme[k] for k in ("type", "in", "name")} == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    assert "create_api_client" in scheme["description"]
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


# --- the document a client generator reads (issue 12) --------------------------------------

OPERATION_IDS = {
    ("get", "/api/v1/products/"): "products_list",
    ("get", "/api/v1/products/{product_id}/"): "products_retrieve",
    ("get", "/api/v1/orders/"): "orders_list",
    ("post", "/api/v1/orders/"): "orders_create",
    ("get", "/api/v1/orders/{order_id}/"): "orders_retrieve",
    ("post", "/api/v1/orders/{order_id}/cancel/"): "orders_cancel",
    ("post", "/api/v1/payments/webhook/"): "payments_webhook",
}

# What each operation can answer besides success, by status: the contract of SPEC §3/§5
# plus what any request meets (a query the service cannot store, an Accept without JSON, a
# body over the limit, a failure of ours, a database outage).
_ANY = {
    406: ["not_acceptable"],
    413: ["payload_too_large"],
    500: ["internal_error"],
    503: ["service_unavailable"],
}
_KEY = {401: ["authentication_failed", "not_authenticated"], 429: ["rate_limited"]}
PROBLEM_CODES = {
    "products_list": {400: ["validation_error"], 429: ["rate_limited"], **_ANY},
    "products_retrieve": {
        400: ["bad_request", "validation_error"],
        404: ["not_found"],
        429: ["rate_limited"],
        **_ANY,
    },
    "orders_list": {400: ["validation_error"], **_KEY, **_ANY},
    "orders_create": {
        400: ["idempotency_key_invalid", "idempotency_key_missing", "validation_error"],
        409: ["idempotency_key_in_use", "idempotency_key_reused", "insufficient_stock"],
        415: ["unsupported_media_type"],
        422: ["product_unavailable"],
        **_KEY,
        **_ANY,
    },
    "orders_retrieve": {
        400: ["bad_request", "validation_error"],
        404: ["not_found"],
        **_KEY,
        **_ANY,
    },
    "orders_cancel": {
        400: ["bad_request", "validation_error"],
        404: ["not_found"],
        409: ["order_not_cancellable"],
        **_KEY,
        **_ANY,
    },
    "payments_webhook": {
        400: ["validation_error", "webhook_malformed"],
        401: ["webhook_signature_invalid"],
        **_ANY,
    },
}
LIMITED = {
    "products_list",
    "products_retrieve",
    "orders_list",
    "orders_create",
    "orders_retrieve",
    "orders_cancel",
}
RATE_LIMIT_HEADERS = [
    "RateLimit-Policy",
    "RateLimit",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
]


@pytest.fixture(scope="module")
def schema() -> dict:
    GENERATOR_STATS.reset()
    document = SchemaGenerator().get_schema(public=True)
    assert not GENERATOR_STATS, "schema generation warned"
    return json.loads(json.dumps(document))  # plain JSON types, as clients see it


def _operations(schema):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


def _resolve(schema, node):
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def test_operation_ids_are_the_clean_ones(schema):
    found = {(method, path): op["operationId"] for method, path, op in _operations(schema)}
    assert found == OPERATION_IDS


def test_every_operation_has_a_summary_a_description_and_a_tag(schema):
    for method, path, operation in _operations(schema):
        assert operation.get("summary"), (method, path)
        assert len(operation.get("description", "")) > 40, (method, path)
        assert operation.get("tags"), (method, path)


def test_the_document_names_its_server(schema):
    assert schema["servers"] == [{"url": "/", "description": "This service"}]


def test_each_operation_lists_exactly_the_problem_codes_it_answers(schema):
    for _method, _path, operation in _operations(schema):
        documented = {}
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            content = response["content"]
            assert list(content) == ["application/problem+json"], (operation["operationId"], status)
            problem = _resolve(schema, content["application/problem+json"]["schema"])
            assert problem["required"][:5] == ["type", "title", "status", "detail", "code"]
            code = _resolve(schema, problem["properties"]["code"])
            documented[int(status)] = code["enum"]
            # one example per code, each of that code
            examples = content["application/problem+json"]["examples"]
            assert sorted(e["value"]["code"] for e in examples.values()) == code["enum"]
            assert all(e["value"]["status"] == int(status) for e in examples.values())
        assert documented == PROBLEM_CODES[operation["operationId"]], operation["operationId"]


def _enums(node):
    if isinstance(node, dict):
        if "enum" in node:
            yield node["enum"]
        for value in node.values():
            yield from _enums(value)
    elif isinstance(node, list):
        for value in node:
            yield from _enums(value)


def test_no_enum_offers_an_empty_string(schema):
    # `?status=` (no filter) is documented with allowEmptyValue, not as a status ""
    for values in _enums(schema):
        assert "" not in values, values
    status = next(
        p for p in schema["paths"]["/api/v1/orders/"]["get"]["parameters"] if p["name"] == "status"
    )
    assert status["allowEmptyValue"] is True
    assert _resolve(schema, status["schema"])["enum"] == [
        "pending_payment",
        "paid",
        "cancelled",
        "refunded",
    ]


@pytest.mark.parametrize(
    "component",
    [
        "Order",
        "OrderItem",
        "PaymentSummary",
        "Product",
        "PaginatedOrderList",
        "PaginatedProductList",
        "WebhookAccepted",
    ],
)
def test_every_field_of_a_response_is_required(schema, component):
    # a generated client gets no optional (`Unset`) field for what is always sent
    body = schema["components"]["schemas"][component]
    assert set(body["required"]) == set(body["properties"]), component


def test_nullable_fields_are_exactly_those_that_can_be_null(schema):
    components = schema["components"]["schemas"]
    nullable = {
        (name, field)
        for name in ("Order", "OrderItem", "PaymentSummary", "Product")
        for field, definition in components[name]["properties"].items()
        if definition.get("nullable")
    }
    assert nullable == {
        ("Order", "cancel_reason"),
        ("Order", "payment"),
        ("Order", "paid_at"),
        ("Order", "cancelled_at"),
        ("PaymentSummary", "provider_payment_id"),
    }
    cancel_reason = components["Order"]["properties"]["cancel_reason"]
    assert cancel_reason["oneOf"][0] == {"$ref": "#/components/schemas/CancelReasonEnum"}
    assert components["CancelReasonEnum"]["enum"] == [
        "customer_requested",
        "staff_cancelled",
        "payment_failed",
        "payment_expired",
    ]
    assert components["Order"]["properties"]["status"]["allOf"] == [
        {"$ref": "#/components/schemas/OrderStatusEnum"}
    ]


def test_every_response_documents_its_headers(schema):
    for _method, _path, operation in _operations(schema):
        op = operation["operationId"]
        for status, response in operation["responses"].items():
            headers = response["headers"]
            required = {name for name, header in headers.items() if header.get("required")}
            assert "X-Request-ID" in required, (op, status)
            limited = op in LIMITED
            assert all((name in headers) == limited for name in RATE_LIMIT_HEADERS), (op, status)
            if limited and (int(status) < 300 or status == "429"):
                # what core.ratelimit sends on every response it counted
                assert {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= required
            if status in ("429", "503"):
                assert "Retry-After" in required, (op, status)
    create = schema["paths"]["/api/v1/orders/"]["post"]["responses"]
    assert {"Location", "Idempotent-Replayed"} <= {
        name for name, header in create["201"]["headers"].items() if header["required"]
    }
    assert create["422"]["headers"]["Idempotent-Replayed"]["required"] is True
    # 409: Retry-After only with idempotency_key_in_use, Idempotent-Replayed only when stored
    assert create["409"]["headers"]["Retry-After"]["required"] is False
    assert not create["409"]["headers"]["Idempotent-Replayed"].get("required")


def _json_schema(node):
    """OpenAPI 3.0 schema -> JSON Schema: `nullable` becomes a null alternative."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        if "type" in converted and not {"allOf", "oneOf", "anyOf"} & converted.keys():
            converted["type"] = [converted["type"], "null"]
            if "enum" in converted:
                converted["enum"] = [*converted["enum"], None]
        else:
            converted = {"anyOf": [converted, {"type": "null"}]}
    return converted


def _validator(schema, target):
    from jsonschema import Draft202012Validator

    document = {"components": _json_schema(schema["components"]), **_json_schema(target)}
    return Draft202012Validator(document)


def test_every_example_conforms_to_its_schema(schema):
    count = 0
    for _method, _path, operation in _operations(schema):
        bodies = [operation.get("requestBody", {"content": {}})]
        bodies += list(operation["responses"].values())
        for body in bodies:
            for media in body.get("content", {}).values():
                validator = _validator(schema, media["schema"])
                for name, example in media.get("examples", {}).items():
                    errors = [e.message for e in validator.iter_errors(example["value"])]
                    assert not errors, (operation["operationId"], name, errors)
                    count += 1
    assert count > 60
    # every operation with a body shows one, and every success answer too
    for _method, _path, operation in _operations(schema):
        if "requestBody" in operation:
            assert operation["requestBody"]["content"]["application/json"]["examples"]
        success = next(r for s, r in operation["responses"].items() if s.startswith("2"))
        assert success["content"]["application/json"]["examples"], operation["operationId"]


def _operation(schema, operation_id):
    return next(op for _m, _p, op in _operations(schema) if op["operationId"] == operation_id)


def test_the_answers_the_service_sends_are_the_documented_ones(schema, client):
    from decimal import Decimal

    from orders.models import CancelReason
    from orders.services import OrderLine, order_cancel, order_create, order_mark_paid
    from tests.factories import make_api_client, make_product

    # given a product, a client's key, a paid and a cancelled order
    product = make_product(stock=3, price=Decimal("2.00"))
    owner, key = make_api_client()
    paid = order_create(client=owner, email="p@example.com", lines=[OrderLine(product.pk, 1)])
    order_mark_paid(order_id=paid.pk)
    cancelled = order_create(client=owner, email="c@example.com", lines=[OrderLine(product.pk, 1)])
    order_cancel(order_id=cancelled.pk, reason=CancelReason.CUSTOMER_REQUESTED)
    auth = {"HTTP_X_API_KEY": key}
    order = {"email": "a@example.com", "items": [{"product_id": str(product.pk), "quantity": 1}]}

    def create(body, **headers):
        return client.post("/api/v1/orders/", body, content_type="application/json", **headers)

    answers = [
        ("products_list", client.get("/api/v1/products/")),
        ("products_list", client.get("/api/v1/products/", {"page_size": "0"})),
        ("products_retrieve", client.get(f"/api/v1/products/{product.pk}/")),
        ("products_retrieve", client.get(f"/api/v1/products/{ANY_ID}/")),
        ("orders_list", client.get("/api/v1/orders/", {"status": ""}, **auth)),
        ("orders_list", client.get("/api/v1/orders/")),
        ("orders_list", client.get("/api/v1/orders/", HTTP_X_API_KEY="wrong")),
        ("orders_list", client.get("/api/v1/orders/", HTTP_ACCEPT="text/html", **auth)),
        ("orders_create", create(order, HTTP_IDEMPOTENCY_KEY="k1", **auth)),
        ("orders_create", create(order, HTTP_IDEMPOTENCY_KEY="k1", **auth)),
        ("orders_create", create(order, **auth)),
        ("orders_create", create({"email": "x"}, HTTP_IDEMPOTENCY_KEY="k2", **auth)),
        (
            "orders_create",
            create({**order, "email": "b@example.com"}, HTTP_IDEMPOTENCY_KEY="k1", **auth),
        ),
        (
            "orders_create",
            create(
                {
                    "email": "a@example.com",
                    "items": [{"product_id": str(product.pk), "quantity": 9}],
                },
                HTTP_IDEMPOTENCY_KEY="k3",
                **auth,
            ),
        ),
        (
            "orders_create",
            create(
                {"email": "a@example.com", "items": [{"product_id": ANY_ID, "quantity": 1}]},
                HTTP_IDEMPOTENCY_KEY="k4",
                **auth,
            ),
        ),
        ("orders_retrieve", client.get(f"/api/v1/orders/{paid.pk}/", **auth)),
        ("orders_retrieve", client.get(f"/api/v1/orders/{ANY_ID}/", **auth)),
        ("orders_cancel", client.post(f"/api/v1/orders/{cancelled.pk}/cancel/", **auth)),
        ("orders_cancel", client.post(f"/api/v1/orders/{paid.pk}/cancel/", **auth)),
        (
            "payments_webhook",
            client.post("/api/v1/payments/webhook/", {}, content_type="application/json"),
        ),
    ]
    seen = set()
    for operation_id, response in answers:
        status = str(response.status_code)
        documented = _operation(schema, operation_id)["responses"].get(status)
        assert documented is not None, (operation_id, status, response.content)
        ((media_type, media),) = documented["content"].items()
        assert response["Content-Type"] == media_type, (operation_id, status)
        body = json.loads(response.content)
        errors = [e.message for e in _validator(schema, media["schema"]).iter_errors(body)]
        assert not errors, (operation_id, status, errors)
        for name, header in documented["headers"].items():
            if header.get("required"):
                assert name in response, (operation_id, status, name)
        seen.add((operation_id, response.status_code, body.get("code")))
    assert {code for _op, _status, code in seen} >= {
        None,
        "validation_error",
        "not_found",
        "not_authenticated",
        "authentication_failed",
        "not_acceptable",
        "idempotency_key_missing",
        "idempotency_key_reused",
        "insufficient_stock",
        "product_unavailable",
        "order_not_cancellable",
        "webhook_signature_invalid",
    }
