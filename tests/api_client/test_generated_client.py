"""A typed Python client generated from the running service's OpenAPI document works.

End to end, as an integrator would do it: gunicorn serves the API; openapi-python-client
generates `orders_client` from the /api/schema/ it serves; `mypy --strict` checks the
generated package together with tests/api_client/scenario.py, written against it, and must
find nothing; then the scenario creates an order (with an Idempotency-Key), reads it,
replays the creation, reuses the key with another body and cancels the order against that
service, and its typed results are checked here (and against the database).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType

import pytest
from django.conf import settings
from django.db import connection

from orders.models import Order, OrderStatus
from scripts.processes import REPO, database_url, service_env, start_process, web_command
from scripts.servers import free_port
from tests.factories import make_api_client, make_product

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HERE = Path(__file__).parent
GENERATOR_CONFIG = HERE / "openapi-python-client.yml"
PACKAGE = "orders_client"
# A bound for a hung tool, not a wait: each run returns as soon as it is done.
TOOL_TIMEOUT = 600


@pytest.fixture
def web(tmp_path) -> Iterator[str]:
    """gunicorn on a free port, on pytest's test database; yields its base URL."""
    port = free_port()
    env = service_env(
        database_url=database_url(connection.settings_dict),
        redis_url=settings.REDIS_URL,
        names=f"client-{uuid.uuid4().hex[:8]}",
        DEBUG="0",
        PORT=str(port),
        WEB_CONCURRENCY="1",
        WEB_THREADS="2",
        API_RATE_LIMIT="100000/60s",
        ORDER_RATE_LIMIT="100000/60s",
        PAYMENT_NUDGE_ON_COMMIT="0",
        OUTBOX_NUDGE_ON_COMMIT="0",
    )
    process = start_process("web", web_command(), env, tmp_path / "web.log", cwd=REPO)
    try:
        base_url = f"http://127.0.0.1:{port}"
        process.wait_http_ok(f"{base_url}/healthz", timeout=60, what="gunicorn up")
        yield base_url
    finally:
        process.stop()
        print(process.log_tail(40))  # shown when the test failed


def _run(*command: str, cwd: Path) -> str:
    # The generator's post hooks call `ruff` by name: the one of this virtualenv.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    result = subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output}"
    return output


@pytest.fixture
def generated(web, tmp_path) -> Iterator[Path]:
    """`orders_client` generated from the served schema, next to a copy of scenario.py, both
    through `mypy --strict`; the folder is importable for the test's duration."""
    with urllib.request.urlopen(f"{web}/api/schema/?format=json", timeout=30) as answer:  # noqa: S310
        schema = json.load(answer)
    build = tmp_path / "build"
    build.mkdir()
    (build / "schema.json").write_text(json.dumps(schema))

    output = _run(
        sys.executable,
        "-m",
        "openapi_python_client",
        "generate",
        "--path",
        "schema.json",
        "--meta",
        "none",
        "--output-path",
        PACKAGE,
        "--config",
        str(GENERATOR_CONFIG),
        cwd=build,
    )
    # A schema the generator could not fully use is a failure too.
    assert "Warning" not in output, output
    print(output.strip())
    shutil.copy(HERE / "scenario.py", build / "scenario.py")

    checked = _run(
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--cache-dir",
        str(tmp_path / "mypy_cache"),
        PACKAGE,
        "scenario.py",
        cwd=build,
    )
    print(checked.strip())

    sys.path.insert(0, str(build))
    try:
        yield build
    finally:
        sys.path.remove(str(build))
        for name in list(sys.modules):
            if name == "scenario" or name == PACKAGE or name.startswith(PACKAGE + "."):
                del sys.modules[name]


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


def test_a_generated_client_creates_reads_replays_and_cancels_an_order(web, generated):
    # given a product with stock and an API key
    product = make_product(stock=10, price=Decimal("12.50"))
    _row, api_key = make_api_client()
    models = _module(f"{PACKAGE}.models")
    scenario = _module("scenario")

    # when the typed scenario runs against the service
    walk = scenario.walk(
        base_url=web, api_key=api_key, product_id=product.pk, key=f"typed-{uuid.uuid4()}"
    )

    # then the creation is a pending order at the product's price, with its headers
    created = walk.created
    assert isinstance(created, models.Order)
    assert walk.created_answer.status == 201
    assert walk.created_answer.headers["idempotent-replayed"] == "false"
    assert walk.created_answer.headers["location"] == f"/api/v1/orders/{created.id}/"
    assert walk.created_answer.headers["x-request-id"]
    assert walk.created_answer.headers["ratelimit-remaining"].isdigit()
    assert created.status is models.OrderStatusEnum.PENDING_PAYMENT
    assert created.cancel_reason is None
    assert created.payment is None
    assert created.paid_at is None
    assert created.cancelled_at is None
    assert [(i.product_id, i.sku, i.quantity, Decimal(i.unit_price)) for i in created.items] == [
        (product.pk, product.sku, 2, Decimal("12.50"))
    ]
    assert Decimal(created.total) == Decimal("25.00")
    assert created.expires_at > created.created_at

    # and reading it gives the same order
    assert isinstance(walk.read, models.Order)
    assert (walk.read.id, walk.read.status, walk.read.total, walk.read.created_at) == (
        created.id,
        created.status,
        created.total,
        created.created_at,
    )

    # and the replay is the stored response, byte for byte, marked as a replay
    assert walk.replayed_answer.status == 201
    assert walk.replayed_answer.content == walk.created_answer.content
    assert walk.replayed_answer.headers["idempotent-replayed"] == "true"
    assert walk.replayed_answer.headers["location"] == walk.created_answer.headers["location"]
    assert walk.replayed.id == created.id

    # and the key with another body is a typed 409 naming its code
    assert isinstance(walk.reused_key, models.OrdersCreate409Problem)
    assert walk.reused_key_answer.status == 409
    assert walk.reused_key_answer.headers["content-type"] == "application/problem+json"
    assert walk.reused_key.code is models.OrdersCreate409ProblemCode.IDEMPOTENCY_KEY_REUSED
    assert walk.reused_key.status == 409

    # and the cancellation says why and when, and gave the units back
    cancelled = walk.cancelled
    assert walk.cancelled_answer.status == 200
    assert cancelled.id == created.id
    assert cancelled.status is models.OrderStatusEnum.CANCELLED
    assert cancelled.cancel_reason is models.CancelReasonEnum.CUSTOMER_REQUESTED
    assert cancelled.cancelled_at is not None
    assert walk.product_before.stock == 10
    assert walk.product_after.stock == 10

    # and the database holds that one order, cancelled
    assert list(Order.objects.values_list("pk", "status")) == [(created.id, OrderStatus.CANCELLED)]
