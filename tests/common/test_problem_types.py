"""Problem types resolve (issue 12): every `type` is a relative URI `/problems/<code>` of a
page the service serves, for every code the code base (and its nginx) can emit.

The codes are collected from where they are written, not from the registry: every
DomainError subclass, core/problems.py's DRF and bare-status maps, every literal
`code="..."` in the application packages, and every body nginx.conf writes by hand.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
from django.test import Client
from rest_framework import exceptions as drf_exceptions

from catalog.models import Product
from core import problems
from core.problem_types import PROBLEM_TYPES, problem_type_uri
from core.problems import DomainError, problem_body, problem_for
from tests.common.helpers import assert_problem
from tests.factories import make_product
from tests.orders.helpers import ORDERS_URL, new_api, order_body, post_order, unique_key

REPO = Path(__file__).resolve().parents[2]
APP_PACKAGES = ("core", "clients", "catalog", "orders", "payments", "outbox", "orders_project")
NGINX_CONF = REPO / "deploy" / "nginx" / "nginx.conf"

# `code = "x"` (a class attribute) or `code="x"` (an argument): how a code is written.
_LITERAL_CODE = re.compile(r"\bcode\s*=\s*[\"']([a-z0-9_]+)[\"']")

pytestmark = pytest.mark.django_db


def _application_modules() -> list[tuple[str, str]]:
    """(dotted name, source) of every application module outside migrations."""
    modules = []
    for package in APP_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            relative = path.relative_to(REPO).with_suffix("")
            name = ".".join(relative.parts).removesuffix(".__init__")
            modules.append((name, path.read_text()))
    return modules


def _domain_error_codes() -> set[str]:
    # Import every module that mentions DomainError, so that each subclass exists.
    for name, source in _application_modules():
        if "DomainError" in source:
            importlib.import_module(name)
    codes: set[str] = set()
    pending = [DomainError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return codes


def _literal_codes() -> set[str]:
    return {code for _, source in _application_modules() for code in _LITERAL_CODE.findall(source)}


def _drf_and_status_codes() -> set[str]:
    codes = {code for _, code in problems._DRF_CODES}
    codes |= set(problems._STATUS_CODES.values())
    # The fallbacks of a bare status no map names, below and above 500.
    codes |= {problems._status_code(418), problems._status_code(599)}
    # Every APIException DRF defines, as problem_for renders it (incl. the base class).
    exception_classes = [drf_exceptions.APIException]
    exception_classes += [
        cls
        for cls in vars(drf_exceptions).values()
        if isinstance(cls, type) and issubclass(cls, drf_exceptions.APIException)
    ]
    needs_an_argument = {
        drf_exceptions.MethodNotAllowed: ("PATCH",),
        drf_exceptions.UnsupportedMediaType: ("text/csv",),
    }
    for cls in exception_classes:
        error = cls(*needs_an_argument.get(cls, ()))
        codes.add(problem_for(error).body["code"])
    return codes


def _nginx_bodies() -> list[dict]:
    return [json.loads(body) for body in re.findall(r"'(\{\"type\".*?\})'", NGINX_CONF.read_text())]


def _every_emittable_code() -> set[str]:
    return (
        _domain_error_codes()
        | _literal_codes()
        | _drf_and_status_codes()
        | {body["code"] for body in _nginx_bodies()}
    )


def _canonical_link(html: str) -> str:
    match = re.search(r'<link rel="canonical" href="([^"]+)">', html)
    assert match, html[:500]
    return match.group(1)


# --------------------------------------------------------------------------- the registry


def test_the_collection_finds_each_kind_of_emitter():
    # A guard on the test itself: a scan that found nothing would prove nothing.
    assert {"insufficient_stock", "idempotency_key_in_use", "webhook_malformed"} <= (
        _domain_error_codes()
    )
    assert {"length_required", "not_ready", "bad_request"} <= _literal_codes()
    assert {"not_authenticated", "rate_limited", "error", "internal_error"} <= (
        _drf_and_status_codes()
    )
    assert {"request_timeout", "bad_gateway", "gateway_timeout"} <= {
        body["code"] for body in _nginx_bodies()
    }


def test_every_code_the_code_base_can_emit_has_a_page(client: Client):
    # given every code written anywhere an error is made
    codes = _every_emittable_code()
    # then each is a registered problem type ...
    assert codes - PROBLEM_TYPES.keys() == set()
    for code in sorted(codes):
        # ... whose type URI is served: 200, a page that names itself by that URI
        response = client.get(problem_type_uri(code))
        assert response.status_code == 200, code
        assert response["Content-Type"].startswith("text/html")
        assert _canonical_link(response.content.decode()) == problem_type_uri(code)


def test_every_registered_type_is_the_link_its_bodies_carry(client: Client):
    for code, problem_type in PROBLEM_TYPES.items():
        # given the body any emitter makes for the code
        body = problem_body(status=problem_type.status or 400, code=code)
        # then its type is the relative URI of the code's page, and its title the type's
        assert body["type"] == f"/problems/{code}" == problem_type.uri
        assert body["title"] == problem_type.title
        # and that page, asked for as JSON, describes the same type
        page = client.get(body["type"], HTTP_ACCEPT="application/json")
        assert page.status_code == 200 and page["Content-Type"] == "application/json"
        described = page.json()
        assert (described["type"], described["code"], described["title"]) == (
            body["type"],
            code,
            body["title"],
        )
        assert described["status"] == problem_type.status
        assert described["meaning"] and described["action"]


def test_nginx_bodies_carry_the_registered_type_title_and_status():
    bodies = _nginx_bodies()
    assert len(bodies) >= 10  # the status map's nine and /metrics' 403
    for body in bodies:
        problem_type = PROBLEM_TYPES[body["code"]]
        assert body["type"] == problem_type.uri, body
        assert body["title"] == problem_type.title, body
        assert body["status"] == problem_type.status, body


def test_a_domain_error_with_an_unregistered_code_fails_at_import():
    with pytest.raises(TypeError, match=r"core/problem_types\.py"):
        type("Unregistered", (DomainError,), {"status": 409, "code": "no_such_problem"})


# --------------------------------------------------------------------------- the pages


def test_the_page_is_html_by_default_and_json_when_asked(client: Client):
    html = client.get("/problems/insufficient_stock")
    assert html.status_code == 200 and html["Content-Type"].startswith("text/html")
    text = html.content.decode()
    assert "<h1>Not enough stock</h1>" in text
    assert "What to do" in text and "<code>products</code>" in text
    assert "Accept" in html["Vary"]

    as_json = client.get("/problems/insufficient_stock", HTTP_ACCEPT="application/json")
    assert as_json["Content-Type"] == "application/json"
    assert as_json.json()["members"] == {
        "products": PROBLEM_TYPES["insufficient_stock"].members["products"]
    }

    browser = client.get(
        "/problems/insufficient_stock",
        HTTP_ACCEPT="text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    )
    assert browser["Content-Type"].startswith("text/html")


def test_an_unknown_code_is_404_problem_json(client: Client):
    response = client.get("/problems/no_such_problem")
    body = assert_problem(response, status=404, code="not_found")
    assert "/problems/" in body["detail"]


def test_the_index_lists_every_type(client: Client):
    html = client.get("/problems/").content.decode()
    for problem_type in PROBLEM_TYPES.values():
        assert f'href="{problem_type.uri}"' in html
    listed = client.get("/problems/", HTTP_ACCEPT="application/json").json()["problem_types"]
    assert {entry["code"] for entry in listed} == set(PROBLEM_TYPES)


def test_pages_are_read_only(client: Client):
    assert client.post("/problems/insufficient_stock").status_code == 405
    assert client.head("/problems/insufficient_stock").status_code == 200


# --------------------------------------------------------------------------- real errors


def test_real_error_answers_link_to_their_pages(client: Client):
    # given errors from several layers: URL routing, authentication, validation, the
    # idempotency header, and a stored business refusal
    product = make_product(stock=1)
    _, _, api = new_api()
    answers = [
        (client.get("/api/v1/nothing-here/"), 404, "not_found"),
        (client.get("/api/v1/orders/"), 401, "not_authenticated"),
        (post_order(api, {"email": "not-an-email", "items": []}), 400, "validation_error"),
        (
            api.post("/api/v1/orders/", data=order_body([(product, 1)]), format="json"),
            400,
            "idempotency_key_missing",
        ),
        (post_order(api, order_body([(product, 2)])), 409, "insufficient_stock"),
    ]
    for response, status, code in answers:
        body = assert_problem(response, status=status, code=code)
        # when the client follows the body's type
        page = client.get(body["type"])
        # then it reaches the page of exactly that problem
        assert page.status_code == 200, body
        assert _canonical_link(page.content.decode()) == body["type"]
        assert f"<h1>{PROBLEM_TYPES[code].title}</h1>" in page.content.decode()


def test_a_stored_refusal_replays_byte_for_byte_whatever_the_host():
    # given an order refused for stock, through one Host
    product = make_product(stock=0)
    _, _, api = new_api()
    key = unique_key()
    body = json.dumps(order_body([(product, 1)]))

    def send(host: str):
        return api.post(
            ORDERS_URL,
            data=body,
            content_type="application/json",
            HTTP_IDEMPOTENCY_KEY=key,
            HTTP_HOST=host,
        )

    first = send("localhost")
    assert_problem(first, status=409, code="insufficient_stock")
    # when the same request is retried through another Host
    replay = send("127.0.0.1")
    # then the stored bytes come back unchanged, their type host-independent
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.content == first.content
    assert json.loads(replay.content)["type"] == "/problems/insufficient_stock"
    assert Product.objects.get(pk=product.pk).stock == 0
