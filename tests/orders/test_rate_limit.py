"""Rate limits (SPEC §3 "Rate limiting"): Redis sliding windows, atomic under concurrency,
per (client, email) for order creation and per client for the API, failing open."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter

import pytest
from django.conf import settings as django_settings
from django.test import override_settings
from prometheus_client import REGISTRY

from core import ratelimit
from core.ratelimit import rate_limit_hit
from orders.models import IdempotencyRecord, Order
from tests.common.helpers import assert_problem, free_port
from tests.factories import make_product
from tests.orders.helpers import (
    ORDERS_URL,
    api_for,
    new_api,
    order_body,
    post_order,
    run_in_threads,
    unique_email,
    unique_key,
    wait_until,
)
from tests.together import StartLine, wait_threads


@pytest.fixture(autouse=True)
def limiter_not_paused():
    """A fail-open pause left by one test would let the next one through unlimited."""
    ratelimit.fail_open_breaker.reset()
    yield
    ratelimit.fail_open_breaker.reset()


def assert_rate_limited(response, *, limit: int) -> None:
    assert_problem(response, status=429, code="rate_limited")
    assert int(response["Retry-After"]) >= 1
    assert response["RateLimit-Limit"] == str(limit)
    assert response["RateLimit-Remaining"] == "0"
    assert int(response["RateLimit-Reset"]) >= 1


def test_limiter_admits_exactly_k_of_n_concurrent_hits():
    # given 40 threads hitting one identity against a limit of 7
    identity = f"test:{uuid.uuid4()}"
    start = StartLine(40)
    decisions = []
    lock = threading.Lock()

    def hit() -> None:
        start.wait()
        decision = rate_limit_hit(scope="test", identity=identity, rate="7/60s")
        with lock:
            decisions.append(decision)

    # when they all hit at once
    threads = [threading.Thread(target=hit, daemon=True) for _ in range(40)]
    for thread in threads:
        thread.start()
    start.release(what="40 threads at the start line")
    wait_threads(threads, what="40 limiter hits", progress=lambda: len(decisions))

    # then exactly 7 are allowed, with remaining counting down 6..0
    assert len(decisions) == 40
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 7
    assert sorted(d.remaining for d in allowed) == [0, 1, 2, 3, 4, 5, 6]
    assert all(d.remaining == 0 and d.reset_seconds >= 1 for d in decisions if not d.allowed)


def test_limiter_window_slides():
    # given an identity that used its 2 requests of a 1 s window
    identity = f"test:{uuid.uuid4()}"
    assert rate_limit_hit(scope="test", identity=identity, rate="2/1s").allowed
    assert rate_limit_hit(scope="test", identity=identity, rate="2/1s").allowed
    assert not rate_limit_hit(scope="test", identity=identity, rate="2/1s").allowed

    # then once the window has moved on, it is admitted again
    # (1 s of wall time on any machine; the margin is scaled by the machine's slowness)
    wait_until(
        lambda: rate_limit_hit(scope="test", identity=identity, rate="2/1s").allowed,
        timeout=5,
        what="the 1 s window to move on",
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
@override_settings(ORDER_RATE_LIMIT="5/60s", API_RATE_LIMIT="100000/60s")
def test_concurrent_orders_for_one_customer_let_exactly_k_through():
    # given 20 requests for one (client, email), each with its own key
    product = make_product(stock=100)
    _, key, _ = new_api()
    email = unique_email()
    keys = [unique_key() for _ in range(20)]
    bodies = {k: order_body([(product, 1)], email=email) for k in keys}
    tasks = [lambda http, k=k: post_order(http, bodies[k], key=k) for k in keys]

    # when they arrive at once
    responses = run_in_threads(tasks, workers=20, make_http=lambda: api_for(key))

    # then exactly 5 pass and the rest are 429 with the rate-limit headers
    assert Counter(r.status_code for r in responses) == {201: 5, 429: 15}
    for response in responses:
        if response.status_code == 429:
            assert_rate_limited(response, limit=5)
    assert Order.objects.count() == 5
    # and the refused requests' keys are not kept
    passed = [k for k, r in zip(keys, responses, strict=True) if r.status_code == 201]
    assert set(IdempotencyRecord.objects.values_list("key", flat=True)) == set(passed)

    # when a successful request is retried after the limit was hit
    http = api_for(key)
    replay = post_order(http, bodies[passed[0]], key=passed[0])

    # then it is replayed: replays do not count against the limit
    assert replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    # while a new request is still limited
    assert_rate_limited(post_order(http, order_body([(product, 1)], email=email)), limit=5)


@pytest.mark.django_db
@pytest.mark.slow
def test_limited_request_releases_its_key_and_succeeds_after_the_window(settings):
    # given a customer who used the 2 orders of a 2 s window
    settings.ORDER_RATE_LIMIT = "2/2s"
    _, _, http = new_api()
    product = make_product(stock=10)
    email = unique_email()
    for _ in range(2):
        assert post_order(http, order_body([(product, 1)], email=email)).status_code == 201
    body = order_body([(product, 1)], email=email)
    limited = post_order(http, body, key="patient")
    assert_rate_limited(limited, limit=2)

    # when the client retries the same key until the window has moved on
    # (2 s of wall time on any machine, plus the retries' own time: the margin is scaled by
    # the machine's slowness)
    response = wait_until(
        lambda: (r := post_order(http, body, key="patient")).status_code == 201 and r,
        timeout=6,
        interval=0.2,
        what="the 2 s window to move on",
    )

    # then the key ran afresh and created the order
    assert response["Idempotent-Replayed"] == "false"
    assert Order.objects.count() == 3


@pytest.mark.django_db
def test_api_limit_applies_per_client(settings):
    # given a tiny API limit
    settings.API_RATE_LIMIT = "3/60s"
    _, _, http = new_api()
    _, _, other = new_api()

    # when one client makes four requests
    responses = [http.get(ORDERS_URL) for _ in range(4)]

    # then the fourth is refused, and every answer says where the client stands
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r["RateLimit-Remaining"] for r in responses[:3]] == ["2", "1", "0"]
    assert all(r["RateLimit-Limit"] == "3" for r in responses)
    assert_rate_limited(responses[3], limit=3)
    # and another client is not affected
    assert other.get(ORDERS_URL).status_code == 200


@pytest.mark.django_db
def test_limiter_fails_open_when_redis_is_unreachable(caplog):
    # given Redis on a port where nothing listens
    _, _, http = new_api()
    product = make_product(stock=5)
    unreachable = {
        "default": {
            **django_settings.CACHES["default"],
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }
    fail_open_before = REGISTRY.get_sample_value("orders_rate_limiter_fail_open_total") or 0

    # when an order is placed
    with override_settings(CACHES=unreachable), caplog.at_level(logging.WARNING):
        response = post_order(http, order_body([(product, 1)]))
        # and more requests follow during the pause, which skips Redis altogether
        listed = http.get(ORDERS_URL)

    # then the API keeps serving, and the fail-open is counted and logged
    assert response.status_code == 201, response.content
    assert listed.status_code == 200
    fail_open_after = REGISTRY.get_sample_value("orders_rate_limiter_fail_open_total")
    assert fail_open_after >= fail_open_before + 2
    assert any("failing open" in record.getMessage() for record in caplog.records)
    assert ratelimit.fail_open_breaker.tripped
