"""The client address behind every per-address decision (issue 9 item 8).

`X-Forwarded-For` is trusted only `NUM_PROXIES` entries from the right; anything a client
writes to the left of what our proxy appended changes nothing. The product-read rate limit
(the one a random header per request used to escape) is checked end to end against Redis.
"""

from __future__ import annotations

import itertools
import uuid

import pytest
from django.test import RequestFactory, override_settings
from rest_framework.test import APIClient

from core import ratelimit
from core.client_address import client_ip, client_throttle_key
from tests.common.helpers import assert_problem

PRODUCTS_URL = "/api/v1/products/"
PROXY = "172.18.0.5"  # nginx, as gunicorn sees it in docker-compose


@pytest.fixture(autouse=True)
def limiter_not_paused():
    """A fail-open pause left by another test would let every request through unlimited."""
    ratelimit.fail_open_breaker.reset()
    yield
    ratelimit.fail_open_breaker.reset()


_counter = itertools.count(1)


def fresh_ipv4() -> str:
    """An address no other test (or earlier run on this Redis) has counted against."""
    n = uuid.uuid4().int
    return f"10.{n % 250 + 1}.{(n >> 8) % 250 + 1}.{next(_counter) % 250 + 1}"


def fresh_ipv6_prefix() -> str:
    """A /64 of its own, as 'xxxx:xxxx:xxxx:xxxx:' (append the interface part)."""
    h = uuid.uuid4().hex
    return f"2001:db8:{h[:4]}:{h[4:8]}:"


def resolve(*, num_proxies: int, remote_addr: str = "198.51.100.7", forwarded=None) -> str:
    meta = {"REMOTE_ADDR": remote_addr}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    with override_settings(NUM_PROXIES=num_proxies):
        return client_ip(RequestFactory().get("/", **meta))


# --- client_ip, unit --------------------------------------------------------------------


@pytest.mark.parametrize(
    "forwarded", [None, "", "203.0.113.9", "1.1.1.1, 2.2.2.2", "garbage", "::1"]
)
def test_without_trusted_proxies_the_header_is_ignored(forwarded):
    # given a direct connection (make run) and any header the client likes
    # when the address is resolved
    # then it is the peer's
    assert resolve(num_proxies=0, forwarded=forwarded) == "198.51.100.7"


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        # the right-most entry is what nginx appended: the address it saw
        ("203.0.113.9", "203.0.113.9"),
        ("6.6.6.6, 203.0.113.9", "203.0.113.9"),
        ("6.6.6.6,7.7.7.7,203.0.113.9", "203.0.113.9"),
        # client garbage to the left is never looked at
        ("not-an-ip, <script>, 203.0.113.9", "203.0.113.9"),
        ("'; DROP TABLE x; --, 203.0.113.9", "203.0.113.9"),
        # spaces and empty entries around the trusted one
        ("  6.6.6.6 ,  203.0.113.9  ", "203.0.113.9"),
        ("6.6.6.6, , ,203.0.113.9", "203.0.113.9"),
        # IPv6, in the forms proxies write it
        ("6.6.6.6, 2001:db8::7", "2001:db8::7"),
        ("2001:DB8:0:0::7", "2001:db8::7"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("203.0.113.9:51234", "203.0.113.9"),
        ("fe80::1%eth0", "fe80::1"),
        # an IPv4 client seen through a dual-stack socket is the IPv4 client
        ("::ffff:203.0.113.9", "203.0.113.9"),
        # the trusted entry is garbage (a broken proxy): the peer, never a client claim
        ("203.0.113.9, garbage", "198.51.100.7"),
        ("203.0.113.9, 999.1.1.1", "198.51.100.7"),
        # no usable entry at all: the request bypassed the proxy
        ("", "198.51.100.7"),
        (" , ,", "198.51.100.7"),
    ],
)
def test_one_trusted_proxy_takes_the_right_most_entry(forwarded, expected):
    assert resolve(num_proxies=1, forwarded=forwarded) == expected


def test_no_header_behind_a_trusted_proxy_is_the_peer():
    # given a request that reached gunicorn without passing nginx
    # then the peer address is the client
    assert resolve(num_proxies=1, forwarded=None) == "198.51.100.7"


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        # two proxies: the entry the outer one appended is second from the right
        ("6.6.6.6, 203.0.113.9, 10.0.0.2", "203.0.113.9"),
        ("203.0.113.9, 10.0.0.2", "203.0.113.9"),
        # fewer entries than proxies: nothing a trusted proxy wrote, so the peer
        ("203.0.113.9", "198.51.100.7"),
        ("", "198.51.100.7"),
    ],
)
def test_two_trusted_proxies(forwarded, expected):
    assert resolve(num_proxies=2, forwarded=forwarded) == expected


@pytest.mark.parametrize("remote_addr", ["", "garbage", "unix:/run/gunicorn.sock"])
def test_a_peer_that_is_no_address_is_unknown(remote_addr):
    assert resolve(num_proxies=0, remote_addr=remote_addr) == "unknown"
    assert resolve(num_proxies=1, remote_addr=remote_addr, forwarded="junk") == "unknown"


def test_throttles_count_an_ipv6_client_by_its_64():
    # given addresses a host could pick from its own /64, and one from another /64
    factory = RequestFactory()
    same = ["2001:db8:1:2::1", "2001:db8:1:2::ffff", "2001:db8:1:2:dead:beef:0:1"]
    other = "2001:db8:1:3::1"

    def key(address: str) -> str:
        with override_settings(NUM_PROXIES=0):
            return client_throttle_key(factory.get("/", REMOTE_ADDR=address))

    # then all of the first /64 is one client, the other /64 another, IPv4 unchanged
    assert {key(a) for a in same} == {"2001:db8:1:2::"}
    assert key(other) == "2001:db8:1:3::"
    assert key("203.0.113.9") == "203.0.113.9"
    assert key("garbage") == "unknown"


# --- the product-read limit, end to end (real Redis) -------------------------------------


def get_products(http: APIClient, *, remote_addr: str, forwarded: str | None = None):
    extra = {"REMOTE_ADDR": remote_addr}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return http.get(PRODUCTS_URL, **extra)


def random_ipv4() -> str:
    n = uuid.uuid4().int
    return ".".join(str((n >> s) % 254 + 1) for s in (0, 8, 16, 24))


@pytest.mark.django_db
@override_settings(API_RATE_LIMIT="3/60s", NUM_PROXIES=0)
def test_a_random_forwarded_for_per_request_is_still_limited(api):
    # given a client connecting directly (no trusted proxy)
    client = fresh_ipv4()

    # when it sends a new made-up X-Forwarded-For with each of 8 product reads
    responses = [
        get_products(api, remote_addr=client, forwarded=f"{random_ipv4()}, {random_ipv4()}")
        for _ in range(8)
    ]

    # then it is limited after 3, as if it had sent no header
    assert [r.status_code for r in responses] == [200, 200, 200] + [429] * 5
    assert [r["RateLimit-Remaining"] for r in responses[:3]] == ["2", "1", "0"]
    assert_problem(responses[3], status=429, code="rate_limited")
    assert int(responses[3]["Retry-After"]) >= 1
    # and another client is unaffected
    assert get_products(api, remote_addr=fresh_ipv4()).status_code == 200


@pytest.mark.django_db
@override_settings(API_RATE_LIMIT="3/60s", NUM_PROXIES=1)
def test_behind_one_proxy_the_right_most_entry_is_the_key(api):
    # given two clients behind nginx, which appends the address it saw
    alice, bob = fresh_ipv4(), fresh_ipv4()

    # when alice makes 5 reads, each claiming a different origin to the left
    alice_responses = [
        get_products(api, remote_addr=PROXY, forwarded=f"{random_ipv4()}, {alice}")
        for _ in range(5)
    ]

    # then her claims change nothing: she is limited after 3
    assert [r.status_code for r in alice_responses] == [200, 200, 200, 429, 429]
    # and bob, through the same proxy, is counted on his own
    assert get_products(api, remote_addr=PROXY, forwarded=bob).status_code == 200
    # and a client cannot borrow bob's budget by naming him to the left of its own address
    assert get_products(api, remote_addr=PROXY, forwarded=f"{bob}, {alice}").status_code == 429


@pytest.mark.django_db
@override_settings(API_RATE_LIMIT="3/60s", NUM_PROXIES=1)
def test_a_request_that_bypasses_the_proxy_is_keyed_on_its_peer(api):
    # given a client that reaches gunicorn directly, sending no header
    direct = fresh_ipv4()

    # when it makes 4 reads
    responses = [get_products(api, remote_addr=direct) for _ in range(4)]

    # then it is limited on its own address
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    # and that is the same client as one nginx reports with that address
    assert get_products(api, remote_addr=PROXY, forwarded=direct).status_code == 429
    # while the proxy's own address is not what was counted
    assert get_products(api, remote_addr=PROXY, forwarded=fresh_ipv4()).status_code == 200


@pytest.mark.django_db
@override_settings(API_RATE_LIMIT="3/60s", NUM_PROXIES=0)
def test_an_ipv6_client_cannot_escape_by_rotating_within_its_64(api):
    # given a host with a /64 that picks a fresh source address for every request
    prefix = fresh_ipv6_prefix()
    responses = [
        get_products(api, remote_addr=f"{prefix}{uuid.uuid4().hex[:4]}:{n:x}::1") for n in range(5)
    ]
    # then it is one client to the limiter
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
