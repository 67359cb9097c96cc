"""Schemathesis against /api/schema/: every operation, positive and negative inputs.

The schema is loaded from the running Django WSGI app, and every generated request goes
through the whole middleware stack in-process (real PostgreSQL, real Redis). For every
operation and every response: no 5xx, the status code, content type, headers and body are
the ones documented, and every error is application/problem+json with a stable `code`.

Order endpoints are called with a real API key (and, via the `ignored_auth` check, without
one or with a wrong one). The payment webhook is signed for real: the fuzzer sends the
placeholder `webhook-signature: sign-me`, which a thin WSGI wrapper replaces with a valid
Standard Webhooks signature over the exact body bytes; a missing or other signature is
left as it is and must be refused.

Generated ids are steered to seeded rows part of the time (a product with stock, one sold
out, an inactive one, the client's pending/paid/cancelled orders, another client's order),
so the fuzzer reaches the success and business-refusal paths, not only 404 and 422.

Bounded and repeatable: a fixed seed, deterministic generation, no example database, and
a modest number of examples per operation. A summary (operations, cases, checks) is
written to test-artifacts/schemathesis/ and printed at the end of the run.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import os
import time
import uuid
from collections import Counter, defaultdict
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import hypothesis
import pytest
import schemathesis
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.test import Client

from core.problems import PROBLEM_CONTENT_TYPE
from orders.models import CancelReason, Order, OrderStatus
from orders.services import OrderLine, order_cancel, order_create, order_mark_paid
from payments.signatures import webhook_sign
from tests.factories import make_api_client, make_product
from tests.fuzz.summary import ARTIFACTS

pytestmark = pytest.mark.fuzz

SCHEMA_PATH = "/api/schema/?format=json"
WEBHOOK_PATH = "/api/v1/payments/webhook/"
SIGN_ME = "sign-me"
API_KEY_PLACEHOLDER = "fuzz-api-key"
SEED = 20_251_124
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "50"))

# Per operation: cases sent, responses by status, check outcomes (merged across processes
# by tests/fuzz/conftest.py).
STATS: dict[str, Counter] = defaultdict(Counter)


class FuzzedApp:
    """The Django WSGI app, plus what a schema cannot say about credentials.

    The API key is created per test (the database is emptied after each), while the schema
    and its auth config are loaded once: the fuzzer sends a placeholder key, swapped here
    for the current one. Missing or other keys pass through untouched.

    For the webhook, standing in for the provider: a request whose `webhook-signature` is
    the placeholder gets a valid signature over its exact body bytes. Any request with a
    signature header gets the `webhook-id` and `webhook-timestamp` headers a provider
    always sends, so that a wrong signature is refused as such (401), not as malformed
    headers (400).
    """

    def __init__(self, app) -> None:
        self.app = app
        self.sequence = itertools.count(1)
        self.api_key: str | None = None  # the current test's key, for API_KEY_PLACEHOLDER

    def __call__(self, environ, start_response):
        if environ.get("HTTP_X_API_KEY") == API_KEY_PLACEHOLDER and self.api_key:
            environ["HTTP_X_API_KEY"] = self.api_key
        signature = environ.get("HTTP_WEBHOOK_SIGNATURE")
        if environ.get("PATH_INFO") == WEBHOOK_PATH and signature is not None:
            webhook_id = f"msg_fuzz_{os.getpid()}_{next(self.sequence)}"
            timestamp = int(time.time())
            environ.setdefault("HTTP_WEBHOOK_ID", webhook_id)
            environ.setdefault("HTTP_WEBHOOK_TIMESTAMP", str(timestamp))
            if signature == SIGN_ME:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                body = environ["wsgi.input"].read(length) if length else b""
                environ["wsgi.input"] = io.BytesIO(body)
                environ["HTTP_WEBHOOK_ID"] = webhook_id
                environ["HTTP_WEBHOOK_TIMESTAMP"] = str(timestamp)
                environ["HTTP_WEBHOOK_SIGNATURE"] = webhook_sign(
                    secret=settings.PAYMENT_WEBHOOK_SECRETS[0],
                    webhook_id=webhook_id,
                    timestamp=timestamp,
                    body=body,
                )
        return self.app(environ, start_response)


class World:
    """Rows the fuzzer's ids are steered to."""

    def __init__(self) -> None:
        client, self.key = make_api_client("fuzzer")
        other_client, _ = make_api_client("fuzzer-other")
        plenty = [make_product(stock=10**6, price=Decimal("3.50")) for _ in range(3)]
        sold_out = make_product(stock=0)
        inactive = make_product(stock=100, is_active=False)
        # Each distinct generated product id maps to a distinct product (the API refuses
        # a product listed twice), up to this many; the rest stay unknown (422).
        self.products = [*plenty, sold_out, inactive]

        def place(owner, product) -> Order:
            return order_create(
                client=owner, email="fuzz@example.com", lines=[OrderLine(product.pk, 1)]
            )

        pending = place(client, plenty[0])
        paid = place(client, plenty[0])
        order_mark_paid(order_id=paid.pk)
        cancelled = place(client, plenty[0])
        order_cancel(order_id=cancelled.pk, reason=CancelReason.CUSTOMER_REQUESTED)
        foreign = place(other_client, plenty[0])
        self.orders = [pending, paid, cancelled, foreign]
        page = Client().get("/api/v1/products/", {"page_size": 1})
        self.cursor = parse_qs(urlsplit(page.json()["next"]).query)["cursor"][0]
        assert [o.status for o in Order.objects.filter(pk=paid.pk)] == [OrderStatus.PAID]

    @staticmethod
    def _pick(value, rows):
        """A generated UUID -> one of `rows` (3 times in 4), or itself (unknown)."""
        try:
            parsed = uuid.UUID(str(value))
        except ValueError:
            return value  # not a UUID: negative data, left alone
        slot = parsed.int % (len(rows) + 2)
        return str(rows[slot].pk) if slot < len(rows) else value

    def steer(self, case) -> None:
        params = case.path_parameters or {}
        if "order_id" in params:
            params["order_id"] = self._pick(params["order_id"], self.orders)
        if "product_id" in params:
            params["product_id"] = self._pick(params["product_id"], self.products)
        query = case.query or {}
        if isinstance(query.get("cursor"), str) and len(query["cursor"]) % 2:
            # Half of the cursors are real ones (a page further on), half stay forged.
            query["cursor"] = self.cursor
        # A copy: a body may be the schema's own example object, which every phase that
        # sends the example shares; steered twice, its lines would all become one product.
        body = case.body = copy.deepcopy(case.body)
        if case.operation.path == "/api/v1/orders/" and isinstance(body, dict):
            self._steer_lines(body.get("items"))
        if case.operation.path == WEBHOOK_PATH and isinstance(body, dict):
            data = body.get("data")
            if isinstance(data, dict) and "order_id" in data:
                data["order_id"] = self._pick(data["order_id"], self.orders)

    def _steer_lines(self, items) -> None:
        """Distinct generated product ids -> distinct seeded products (a product listed
        twice is refused), so the same order can mix sellable, sold-out and unknown."""
        if not isinstance(items, list):
            return
        mapping: dict[str, str] = {}
        free = iter(self.products)
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("product_id"), str):
                continue
            original = item["product_id"]
            if original not in mapping:
                picked = self._pick(original, self.products)
                if picked != original:
                    product = next(free, None)
                    picked = str(product.pk) if product is not None else original
                mapping[original] = picked
            item["product_id"] = mapping[original]


def refusals_a_schema_cannot_express(context, failure, case, response) -> bool:
    """filter_failure: keep every failure except two "valid data rejected" ones whose
    rule OpenAPI cannot state. A cursor is an opaque token, so a forged one is refused
    (400 on `cursor` alone); and a webhook body with NUL or unpaired surrogates anywhere,
    which PostgreSQL cannot store, is refused as malformed."""
    if failure.title != "Schema-valid request rejected" or response.status_code != 400:
        return True
    try:
        problem = json.loads(response.content)
    except ValueError:
        return True
    fields = {error.get("field") for error in problem.get("errors", [])}
    if problem.get("code") == "validation_error" and fields == {"cursor"}:
        return False
    return not (problem.get("code") == "webhook_malformed" and "NUL" in problem.get("detail", ""))


def errors_are_problem_json(ctx, response, case):
    """SPEC §3: every error is application/problem+json with type, title, status, code."""
    if response.status_code < 400:
        return True  # not applicable
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith(PROBLEM_CONTENT_TYPE), (
        f"error {response.status_code} has Content-Type {content_type!r}, not problem+json"
    )
    problem = json.loads(response.content)
    assert isinstance(problem, dict), "a problem is a JSON object"
    missing = {"type", "title", "status", "detail", "code"} - problem.keys()
    assert not missing, f"problem lacks {sorted(missing)}"
    assert problem["status"] == response.status_code, "problem status != HTTP status"
    return None  # passed (True would mean "not applicable")


def after_validate(context, case, response, results):
    stats = STATS[case.operation.label]
    for result in results:
        outcome = "passed" if result.failure is None else "failed"
        stats[f"check:{result.name}:{outcome}"] += 1


@pytest.fixture
def fuzz_world(transactional_db, settings):
    # Far above what the run sends: a 429 must not hide what a request would have done.
    settings.ORDER_RATE_LIMIT = "1000000/60s"
    settings.API_RATE_LIMIT = "1000000/60s"
    world = World()
    APP.api_key = world.key
    yield world
    APP.api_key = None


CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "suppress-health-check": ["too_slow"],  # every example is a request to a database
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
        },
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        "auth": {
            "openapi": {
                "ApiKeyAuth": {"api_key": API_KEY_PLACEHOLDER},
                "StandardWebhooks": {"api_key": SIGN_ME},
            }
        },
        "checks": {
            # A well-formed order for an unknown or inactive product is a business refusal
            # (422 product_unavailable), as a sold-out one is (409 insufficient_stock).
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]
            },
        },
    }
)
# Served by the app itself, as API consumers fetch it; requests go to the same app.
APP = FuzzedApp(get_wsgi_application())
schema = schemathesis.openapi.from_wsgi(SCHEMA_PATH, APP, config=CONFIG)
schema.hook(after_validate)
schema.hook("filter_failure")(refusals_a_schema_cannot_express)


@schema.parametrize()
# The seeded rows are meant to outlive single examples.
@hypothesis.settings(suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
def test_api_conforms_to_its_schema(case, fuzz_world):
    fuzz_world.steer(case)
    stats = STATS[case.operation.label]
    response = case.call()
    stats["cases"] += 1
    stats[f"status:{response.status_code}"] += 1
    case.validate_response(response, additional_checks=[errors_are_problem_json])


@pytest.fixture(scope="module", autouse=True)
def _write_summary():
    yield
    if not STATS:
        return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    target = ARTIFACTS / f"stats-{worker}.json"
    target.write_text(json.dumps({label: dict(c) for label, c in STATS.items()}, indent=1))
