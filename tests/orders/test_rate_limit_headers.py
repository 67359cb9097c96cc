"""Rate-limit response headers (SPEC §3 "Rate limiting", issue 12): the current IETF draft's
`RateLimit-Policy` and `RateLimit` structured fields, one policy per limit the request met
(`api`, `order_create`, `api_key_failures`), the older RateLimit-Limit / -Remaining /
-Reset trio for the tightest of them, and Retry-After on 429 — exact values, on 200, 201,
401 and 429.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from core import ratelimit
from core.ratelimit import RateDecision, rate_limit_headers
from tests.common.helpers import assert_problem
from tests.factories import make_product
from tests.orders.helpers import (
    ORDERS_URL,
    new_api,
    order_body,
    post_order,
    unique_email,
    unique_key,
)

# One member of an RFC 8941 list as these headers write it: "name";key=int;key=int
_MEMBER = re.compile(r'^"([a-z_]+)"((?:;[a-z]+=\d+)+)$')


@pytest.fixture(autouse=True)
def limiter_not_paused():
    ratelimit.fail_open_breaker.reset()
    yield
    ratelimit.fail_open_breaker.reset()


def members(value: str) -> dict[str, dict[str, int]]:
    """Parse a RateLimit / RateLimit-Policy value: {policy: {param: int}}, in order."""
    parsed: dict[str, dict[str, int]] = {}
    for member in value.split(", "):
        match = _MEMBER.match(member)
        assert match, value
        params = dict(param.split("=") for param in match.group(2).strip(";").split(";"))
        parsed[match.group(1)] = {name: int(number) for name, number in params.items()}
    return parsed


def limits_of(response) -> tuple[dict, dict]:
    """(policies, service limits) the response declares."""
    return members(response["RateLimit-Policy"]), members(response["RateLimit"])


def assert_trio(response, *, limit: int, remaining: int, reset: int) -> None:
    assert (
        response["RateLimit-Limit"],
        response["RateLimit-Remaining"],
        response["RateLimit-Reset"],
    ) == (str(limit), str(remaining), str(reset))


# --------------------------------------------------------------------------- the format


def test_headers_are_the_drafts_structured_fields_plus_the_trio_of_the_tightest():
    # given the two decisions an order creation meets
    api = RateDecision("api", True, 600, 60, 597, 60)
    order = RateDecision("order_create", True, 5, 60, 4, 41)
    # then
    assert rate_limit_headers([api, order]) == {
        "RateLimit-Policy": '"api";q=600;w=60, "order_create";q=5;w=60',
        "RateLimit": '"api";r=597;t=60, "order_create";r=4;t=41',
        "RateLimit-Limit": "5",
        "RateLimit-Remaining": "4",
        "RateLimit-Reset": "41",
    }
    # and a tie goes to the later limit, as it always did
    tie = RateDecision("order_create", True, 5, 60, 597, 12)
    assert rate_limit_headers([api, tie])["RateLimit-Limit"] == "5"


def test_policy_names_are_written_as_rfc_8941_strings():
    odd = RateDecision('a"b\\c', True, 1, 1, 0, 1)
    assert odd.policy_item() == '"a\\"b\\\\c";q=1;w=1'
    with pytest.raises(ValueError):
        RateDecision("é", True, 1, 1, 0, 1).policy_item()


# --------------------------------------------------------------------------- the API limit


@pytest.mark.django_db
@override_settings(API_RATE_LIMIT="4/60s")
def test_api_limit_headers_count_down_exactly_then_429_with_retry_after():
    # given a client with an API limit of 4 a minute
    _, _, http = new_api()

    # when it makes five requests
    responses = [http.get(ORDERS_URL) for _ in range(5)]

    # then after n requests, n are used: remaining = 4 - n, under the one policy "api"
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 429]
    for n, response in enumerate(responses[:4], start=1):
        assert response["RateLimit-Policy"] == '"api";q=4;w=60'
        _, limits = limits_of(response)
        assert list(limits) == ["api"]
        assert limits["api"]["r"] == 4 - n
        assert 1 <= limits["api"]["t"] <= 60
        assert_trio(response, limit=4, remaining=4 - n, reset=limits["api"]["t"])
    # the first request is the window's oldest: a slot frees exactly one window later
    assert responses[0]["RateLimit"] == '"api";r=3;t=60'

    # and the fifth is 429 rate_limited, nothing left, Retry-After = the effective window
    refused = responses[4]
    assert_problem(refused, status=429, code="rate_limited")
    _, limits = limits_of(refused)
    assert limits["api"]["r"] == 0 and 1 <= limits["api"]["t"] <= 60
    assert refused["RateLimit-Policy"] == '"api";q=4;w=60'
    assert refused["Retry-After"] == str(limits["api"]["t"])
    assert_trio(refused, limit=4, remaining=0, reset=limits["api"]["t"])


@pytest.mark.django_db
@override_settings(API_RATE_LIMIT="3/60s", NUM_PROXIES=0)
def test_keyless_product_reads_carry_the_api_policy_per_address():
    http = APIClient()
    address = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
    first = http.get("/api/v1/products/", REMOTE_ADDR=address)
    second = http.get("/api/v1/products/", REMOTE_ADDR=address)
    assert first.status_code == second.status_code == 200
    assert first["RateLimit-Policy"] == '"api";q=3;w=60'
    assert first["RateLimit"] == '"api";r=2;t=60'
    assert members(second["RateLimit"])["api"]["r"] == 1


# --------------------------------------------------------------------------- order creation


@pytest.mark.django_db
@override_settings(API_RATE_LIMIT="100/60s", ORDER_RATE_LIMIT="3/60s")
def test_order_creation_declares_both_policies_with_exact_values_on_201_and_429():
    # given a client, one customer, and both limits
    _, _, http = new_api()
    product = make_product(stock=50)
    email = unique_email()
    bodies = [(unique_key(), order_body([(product, 1)], email=email)) for _ in range(4)]

    # when it creates 3 orders for that customer, then a 4th
    responses = [post_order(http, body, key=key) for key, body in bodies]

    # then each 201 declares both policies, in the order they were counted ...
    assert [r.status_code for r in responses] == [201, 201, 201, 429]
    for n, response in enumerate(responses[:3], start=1):
        policies, limits = limits_of(response)
        assert response["RateLimit-Policy"] == '"api";q=100;w=60, "order_create";q=3;w=60'
        assert policies == {"api": {"q": 100, "w": 60}, "order_create": {"q": 3, "w": 60}}
        # ... after n creations: the API limit has 100 - n left, the customer's 3 - n
        assert limits["api"]["r"] == 100 - n
        assert limits["order_create"]["r"] == 3 - n
        # the trio shows the tighter: the customer's limit
        assert_trio(response, limit=3, remaining=3 - n, reset=limits["order_create"]["t"])
    first_api_t = members(responses[0]["RateLimit"])
    assert first_api_t == {"api": {"r": 99, "t": 60}, "order_create": {"r": 2, "t": 60}}

    # and the 4th is 429: the customer's limit used up, the API limit still counted
    refused = responses[3]
    assert_problem(refused, status=429, code="rate_limited")
    policies, limits = limits_of(refused)
    assert list(policies) == ["api", "order_create"]
    assert limits["api"]["r"] == 96
    assert limits["order_create"]["r"] == 0
    assert refused["Retry-After"] == str(limits["order_create"]["t"])
    assert_trio(refused, limit=3, remaining=0, reset=limits["order_create"]["t"])

    # when the first order is replayed: only the API limit counts a replay
    replay = post_order(http, bodies[0][1], key=bodies[0][0])
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert replay["RateLimit-Policy"] == '"api";q=100;w=60'
    assert members(replay["RateLimit"])["api"]["r"] == 95
    assert_trio(replay, limit=100, remaining=95, reset=members(replay["RateLimit"])["api"]["t"])

    # and another customer of the same client has a fresh creation limit
    other = post_order(http, order_body([(product, 1)]))
    assert other.status_code == 201
    assert members(other["RateLimit"])["order_create"] == {"r": 2, "t": 60}
    assert members(other["RateLimit"])["api"]["r"] == 94


@pytest.mark.django_db
@override_settings(API_RATE_LIMIT="2/60s", ORDER_RATE_LIMIT="5/60s")
def test_an_order_creation_refused_by_the_api_limit_declares_the_api_policy():
    # given a client with 2 API requests a minute, both used by order creations
    _, _, http = new_api()
    product = make_product(stock=10)
    email = unique_email()
    created = [post_order(http, order_body([(product, 1)], email=email)) for _ in range(2)]
    assert [r.status_code for r in created] == [201, 201]
    assert members(created[1]["RateLimit"]) == {
        "api": {"r": 0, "t": members(created[1]["RateLimit"])["api"]["t"]},
        "order_create": {"r": 3, "t": members(created[1]["RateLimit"])["order_create"]["t"]},
    }
    # the trio shows the tighter of the two: the API limit now
    assert created[1]["RateLimit-Limit"] == "2" and created[1]["RateLimit-Remaining"] == "0"

    # when a third creation comes
    refused = post_order(http, order_body([(product, 1)], email=email))

    # then the API limit refuses it before the customer's limit is counted
    assert_problem(refused, status=429, code="rate_limited")
    assert refused["RateLimit-Policy"] == '"api";q=2;w=60'
    limits = members(refused["RateLimit"])
    assert list(limits) == ["api"] and limits["api"]["r"] == 0
    assert refused["Retry-After"] == str(limits["api"]["t"])
    assert_trio(refused, limit=2, remaining=0, reset=limits["api"]["t"])


# --------------------------------------------------------------------------- key failures


@pytest.mark.django_db
@override_settings(API_KEY_FAILURE_RATE_LIMIT="2/60s", NUM_PROXIES=0)
def test_failed_key_lookups_declare_their_own_policy_on_401_and_429():
    http = APIClient()
    address = f"203.0.113.{uuid.uuid4().int % 250 + 1}"

    def wrong_key_request():
        key = f"ok_{uuid.uuid4().hex[:8]}_{uuid.uuid4().hex}"
        return http.get(ORDERS_URL, HTTP_X_API_KEY=key, REMOTE_ADDR=address)

    answers = [wrong_key_request() for _ in range(3)]
    for n, answer in enumerate(answers[:2], start=1):
        assert_problem(answer, status=401, code="authentication_failed")
        assert answer["RateLimit-Policy"] == '"api_key_failures";q=2;w=60'
        limits = members(answer["RateLimit"])
        assert limits["api_key_failures"]["r"] == 2 - n
        assert_trio(answer, limit=2, remaining=2 - n, reset=limits["api_key_failures"]["t"])
    refused = answers[2]
    assert_problem(refused, status=429, code="rate_limited")
    limits = members(refused["RateLimit"])
    assert limits["api_key_failures"]["r"] == 0
    assert refused["Retry-After"] == str(limits["api_key_failures"]["t"])


# --------------------------------------------------------------------------- no limit met


@pytest.mark.django_db
def test_responses_that_met_no_limit_carry_no_rate_limit_headers(client):
    # the probes and the problem pages are not rate limited
    for response in (client.get("/healthz"), client.get("/problems/rate_limited")):
        assert response.status_code == 200
        for name in ("RateLimit-Policy", "RateLimit", "RateLimit-Limit"):
            assert name not in response
    # and a webhook (the provider retries; it is not limited)
    webhook = client.post(
        "/api/v1/payments/webhook/", data=json.dumps({}), content_type="application/json"
    )
    assert webhook.status_code in (400, 401)
    assert "RateLimit" not in webhook
