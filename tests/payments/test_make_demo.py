"""`make demo` (scripts/demo.py) against the real service: gunicorn, a Celery worker and beat,
the fake provider, PostgreSQL and Redis, started the way the saga's end-to-end tests start
them (tests/payments/conftest.py), on free ports with names private to this test.

The demo runs as a subprocess, as `make demo` runs it: it creates its own API client with
`manage.py create_api_client`, signs its webhook with the stack's secret and reads the
stack's stream. The demo catalog is loaded with `manage.py seed_demo`, as `make run` does.
The limits are the defaults `make run` has, so the demo is shown to fit within them.
"""

from __future__ import annotations

import subprocess

import pytest

from scripts.processes import PYTHON, REPO
from scripts.waiting import slowness
from tests.payments.helpers import WEBHOOK_SECRET

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# make run's defaults, not the saga tests' unlimited ones.
STACK_ENV = {"API_RATE_LIMIT": "600/60s", "ORDER_RATE_LIMIT": "5/60s"}
STEP_TITLES = [
    "[1/10] list products",
    "[2/10] create an order",
    "[3/10] replay it",
    "[4/10] reuse the key with another body",
    "[5/10] order more than the stock",
    "[6/10] cancel an order",
    "[7/10] a normal order becomes paid",
    "[8/10] a +decline order becomes cancelled",
    "[9/10] a signed webhook by hand",
    "[10/10] the event stream of one order",
]


def _run(argv: list[str], env: dict[str, str], *, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_make_demo_walks_the_whole_api_against_the_running_service(stack, provider):
    # given: the service as make run has it, with the demo catalog
    provider.start(webhook_delay=1.0)
    env = stack.env(PAYMENT_WEBHOOK_SECRETS=WEBHOOK_SECRET)
    # The demo's own waits grow with the machine's slowness; this cap only stops a hang.
    cap = 600 * slowness()
    seeded = _run([str(PYTHON), "manage.py", "seed_demo"], env, timeout=cap)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr

    # when
    demo = _run(
        [str(PYTHON), "-m", "scripts.demo", "--base-url", stack.web_url],
        env | {"DEMO_API_KEY": ""},
        timeout=cap,
    )

    # then
    output = demo.stdout + demo.stderr
    print(output)  # shown by pytest when the test fails
    assert demo.returncode == 0, output
    for title in STEP_TITLES:
        assert title in demo.stdout, f"{title!r} missing from the demo's output"
        assert f"ok: {title.split('] ', 1)[1]}" in demo.stdout
    assert "demo passed: 10 steps" in demo.stdout
    # every request is shown with its method and path, and its response with its status
    assert "> POST /api/v1/orders/  Idempotency-Key: " in demo.stdout
    assert "Idempotent-Replayed: true" in demo.stdout
    assert "< 409 Conflict" in demo.stdout
    assert "problem idempotency_key_reused" in demo.stdout
    assert "problem insufficient_stock" in demo.stdout
    assert "> POST /api/v1/payments/webhook/" in demo.stdout
    assert f"> XRANGE {stack.stream} " in demo.stdout
    assert "order.created    version 1  schema_version 1" in demo.stdout
    assert "order.paid       version 2  schema_version 2" in demo.stdout
    # and each entry is held to the schema the service publishes for it
    assert "> GET /api/events/schemas/order.created.v1.json" in demo.stdout
    assert "> GET /api/events/schemas/order.paid.v2.json" in demo.stdout
