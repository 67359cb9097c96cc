"""Failed API-key authentication is throttled per client address (issue 9 item 10).

Only failures count; once an address is over `API_KEY_FAILURE_RATE_LIMIT`, every key it
sends (a right one too) is refused with 429 problem+json before any key is looked up. The
counters are the Redis sliding windows of the rest of the limiter, so they are exact under
concurrency and fail open when Redis is down.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from core import ratelimit
from tests.common.helpers import assert_problem, free_port
from tests.factories import make_api_client
from tests.orders.helpers import ORDERS_URL, wait_until
from tests.together import StartLine, wait_threads


@pytest.fixture(autouse=True)
def limiter_not_paused():
    """A fail-open pause left by another test would let every request through unlimited."""
    ratelimit.fail_open_breaker.reset()
    yield
    ratelimit.fail_open_breaker.reset()


def fresh_address() -> str:
    """An address no other test (or earlier run on this Redis) has counted against."""
    n = uuid.uuid4().int
    return ".".join(str((n >> s) % 250 + 1) for s in (0, 8, 16, 24))


def wrong_key() -> str:
    return f"ok_{uuid.uuid4().hex[:8]}_{uuid.uuid4().hex}{uuid.uuid4().hex[:11]}"


def list_orders(http: APIClient, *, key: str, address: str, forwarded: str | None = None):
    extra = {"HTTP_X_API_KEY": key, "REMOTE_ADDR": address}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return http.get(ORDERS_URL, **extra)


def assert_key_throttled(response, *, limit: int) -> None:
    assert_problem(response, status=429, code="rate_limited")
    assert int(response["Retry-After"]) >= 1
    assert response["RateLimit-Limit"] == str(limit)
    assert response["RateLimit-Remaining"] == "0"
    assert int(response["RateLimit-Reset"]) >= 1


def apiclient_queries(queries) -> list[str]:
    return [q["sql"] for q in queries if "orders_apiclient" in q["sql"]]


@pytest.mark.django_db
@override_settings(API_KEY_FAILURE_RATE_LIMIT="3/60s", NUM_PROXIES=0)
def test_wrong_keys_are_401_until_the_limit_then_429_even_for_the_right_key(api):
    # given an address guessing keys, and a real client key
    address = fresh_address()
    _, right_key = make_api_client()

    # when it sends 3 wrong keys
    failures = [list_orders(api, key=wrong_key(), address=address) for _ in range(3)]

    # then each is a plain 401 that says how many failures are left
    for response in failures:
        assert_problem(response, status=401, code="authentication_failed")
    assert [r["RateLimit-Remaining"] for r in failures] == ["2", "1", "0"]

    # when it sends more, wrong or right
    with CaptureQueriesContext(connection) as queries:
        refused = [list_orders(api, key=wrong_key(), address=address) for _ in range(5)]
        refused.append(list_orders(api, key=right_key, address=address))

    # then all are 429 problem+json with Retry-After and RateLimit headers
    for response in refused:
        assert_key_throttled(response, limit=3)
    # and no key was looked up: the refusal came before the database
    assert apiclient_queries(queries.captured_queries) == []


@pytest.mark.django_db
@override_settings(API_KEY_FAILURE_RATE_LIMIT="3/60s", NUM_PROXIES=0)
def test_a_correct_key_never_counts(api):
    # given a client using its right key many times from one address
    address = fresh_address()
    _, right_key = make_api_client()
    assert all(
        list_orders(api, key=right_key, address=address).status_code == 200 for _ in range(10)
    )

    # when wrong keys follow from the same address
    statuses = [list_orders(api, key=wrong_key(), address=address).status_code for _ in range(4)]

    # then the whole failure budget was still there
    assert statuses == [401, 401, 401, 429]


@pytest.mark.django_db
@override_settings(API_KEY_FAILURE_RATE_LIMIT="2/60s", NUM_PROXIES=0)
def test_the_limit_is_per_address_and_forwarded_for_changes_nothing(api):
    # given an address over the limit
    guesser, bystander = fresh_address(), fresh_address()
    for _ in range(2):
        assert list_orders(api, key=wrong_key(), address=guesser).status_code == 401
    # when it claims other origins in X-Forwarded-For (no proxy is trusted)
    disguised = [
        list_orders(api, key=wrong_key(), address=guesser, forwarded=fresh_address())
        for _ in range(3)
    ]
    # then it is still refused
    assert [r.status_code for r in disguised] == [429, 429, 429]
    # and another address still gets its own 401s
    assert list_orders(api, key=wrong_key(), address=bystander).status_code == 401


@pytest.mark.django_db
@override_settings(API_KEY_FAILURE_RATE_LIMIT="2/60s", NUM_PROXIES=1)
def test_behind_the_proxy_each_client_has_its_own_budget(api):
    # given two clients behind nginx (one peer address)
    proxy, guesser, bystander = "172.18.0.5", fresh_address(), fresh_address()
    for _ in range(2):
        list_orders(api, key=wrong_key(), address=proxy, forwarded=f"1.2.3.4, {guesser}")
    # when both send a wrong key
    limited = list_orders(api, key=wrong_key(), address=proxy, forwarded=f"5.6.7.8, {guesser}")
    other = list_orders(api, key=wrong_key(), address=proxy, forwarded=bystander)
    # then only the guesser is refused
    assert (limited.status_code, other.status_code) == (429, 401)


@pytest.mark.django_db
@pytest.mark.slow
@override_settings(API_KEY_FAILURE_RATE_LIMIT="2/1s", NUM_PROXIES=0)
def test_the_window_slides_and_the_address_may_try_again(api):
    # given an address refused after 2 failures in a 1 s window
    address = fresh_address()
    assert [list_orders(api, key=wrong_key(), address=address).status_code for _ in range(3)] == [
        401,
        401,
        429,
    ]
    # when it keeps trying until the window has moved on
    response = wait_until(
        lambda: (r := list_orders(api, key=wrong_key(), address=address)).status_code == 401 and r,
        timeout=10,
        interval=0.1,
        what="the 1 s window to move on",
    )
    # then its key is examined again (and found wrong)
    assert_problem(response, status=401, code="authentication_failed")


@pytest.mark.django_db(transaction=True)
@override_settings(API_KEY_FAILURE_RATE_LIMIT="5/60s", NUM_PROXIES=0)
def test_concurrent_wrong_keys_get_exactly_k_401s():
    # given 24 threads, each with its own connection, guessing from one address
    address = fresh_address()
    threads_count, limit = 24, 5
    start = StartLine(threads_count)
    statuses: list[int] = []
    lock = threading.Lock()

    def guess() -> None:
        http = APIClient()
        try:
            start.wait()
            status = list_orders(http, key=wrong_key(), address=address).status_code
            with lock:
                statuses.append(status)
        finally:
            connection.close()

    # when they all send a wrong key at once
    threads = [threading.Thread(target=guess, daemon=True) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    start.release(what=f"{threads_count} guessing threads at the start line")
    wait_threads(threads, what=f"{threads_count} guesses", progress=lambda: len(statuses))

    # then exactly `limit` were told "wrong key" and every other one "too many"
    assert Counter(statuses) == {401: limit, 429: threads_count - limit}


@pytest.mark.django_db
@override_settings(API_KEY_FAILURE_RATE_LIMIT="1/60s", NUM_PROXIES=0)
def test_fails_open_when_redis_is_unreachable(api, caplog):
    # given Redis on a port where nothing listens
    address = fresh_address()
    _, right_key = make_api_client()
    unreachable = {
        "default": {
            **django_settings.CACHES["default"],
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }
    # when wrong and right keys arrive, more than the limit allows
    with override_settings(CACHES=unreachable), caplog.at_level(logging.WARNING):
        wrong = [list_orders(api, key=wrong_key(), address=address) for _ in range(3)]
        right = list_orders(api, key=right_key, address=address)
    # then keys are still checked (401 / 200), nothing is a 5xx, and the outage is logged
    assert [r.status_code for r in wrong] == [401, 401, 401]
    assert right.status_code == 200
    assert any("failing open" in record.getMessage() for record in caplog.records)
