"""Redis round trips per order creation (issue 11): both limits in one script call, no
failure-throttle call on a good key, a commit's nudges in one pipelined round trip,
debounced per process (so the mean is 1 plus at most one round trip per 200 ms per process).

Round trips are counted at the rate limiter's and the nudges' Redis client (django-redis
"default"): each command or pipeline it sends is one. The Celery broker's own traffic, when
a nudge wins its flag, is not counted here.
"""

from __future__ import annotations

import time
import uuid

import pytest
from django.test import override_settings
from django_redis import get_redis_connection

from core import nudge, ratelimit
from core.ratelimit import rate_limit_hit
from tests.factories import make_product
from tests.orders.helpers import new_api, order_body, post_order
from tests.orders.redis_spy import RoundTrip, spy_on_redis

ORDERS = 20


@pytest.fixture(autouse=True)
def limiter_not_paused():
    ratelimit.fail_open_breaker.reset()
    yield
    ratelimit.fail_open_breaker.reset()


@pytest.fixture
def round_trips(monkeypatch) -> list[RoundTrip]:
    return spy_on_redis(monkeypatch)


@pytest.mark.django_db(transaction=True)
@override_settings(OUTBOX_NUDGE_ON_COMMIT=True, PAYMENT_NUDGE_ON_COMMIT=True)
def test_an_order_creation_costs_at_most_one_redis_round_trip_on_average(round_trips):
    # given a client placing orders for different customers, nudges on as in production
    _, _, http = new_api()
    product = make_product(stock=1000)
    assert post_order(http, order_body([(product, 1)])).status_code == 201  # warm: scripts
    round_trips.clear()

    # when it places orders in a row: at least 20, and for at least three debounce windows
    # (so that at least one nudge is due whatever the machine's speed)
    started = time.monotonic()
    statuses = []
    while len(statuses) < ORDERS or time.monotonic() - started < 3 * nudge._DEBOUNCE:
        statuses.append(post_order(http, order_body([(product, 1)])).status_code)
    elapsed = time.monotonic() - started

    # then every order was created
    assert statuses == [201] * len(statuses)
    mean = len(round_trips) / len(statuses)
    print(
        f"redis round trips per order creation: {mean:.2f} over {len(statuses)} orders "
        f"in {elapsed:.2f}s"
    )
    # and both limits cost one script call per order; the good key, none
    limiter = [trip.names for trip in round_trips if "SET" not in trip.names]
    assert limiter == [("EVALSHA",)] * len(statuses)
    # and a commit's nudges take both flags in one round trip, once per debounce window
    nudges = [trip.names for trip in round_trips if "SET" in trip.names]
    assert nudges[0] == ("SET", "SET")
    assert len(nudges) <= 1 + int(elapsed / (nudge._DEBOUNCE_MS / 1000))


@pytest.mark.django_db
def test_the_api_limit_counts_every_creation_and_every_replay_once(settings):
    # given a client with an API limit of 4 requests
    settings.API_RATE_LIMIT = "4/60s"
    _, _, http = new_api()
    product = make_product(stock=10)
    body = order_body([(product, 1)])

    # when it creates an order, replays it twice, and creates another
    responses = [
        post_order(http, body, key="first"),
        post_order(http, body, key="first"),
        post_order(http, body, key="first"),
        post_order(http, order_body([(product, 1)])),
    ]

    # then each counted once against the API limit, replays included
    assert [r.status_code for r in responses] == [201, 201, 201, 201]
    assert [r["Idempotent-Replayed"] for r in responses] == ["false", "true", "true", "false"]
    # (the creations' headers are the tighter order-limit window: 5/60s per customer)
    assert [r["RateLimit-Remaining"] for r in responses[1:3]] == ["2", "1"]
    # and the next request, a replay, is refused by the API limit like any other request
    refused = post_order(http, body, key="first")
    assert refused.status_code == 429
    assert refused["RateLimit-Limit"] == "4"


@pytest.mark.django_db
def test_a_creation_over_the_api_limit_releases_its_key(settings):
    # given a client that has used its whole API limit
    settings.API_RATE_LIMIT = "1/60s"
    _, _, http = new_api()
    product = make_product(stock=10)
    assert post_order(http, order_body([(product, 1)])).status_code == 201

    # when it creates another order
    body = order_body([(product, 1)])
    refused = post_order(http, body, key="later")

    # then it is refused by the API limit, and the key is not kept
    assert refused.status_code == 429
    assert refused["RateLimit-Limit"] == "1"
    settings.API_RATE_LIMIT = "10/60s"
    retried = post_order(http, body, key="later")
    assert retried.status_code == 201
    assert retried["Idempotent-Replayed"] == "false"


def test_the_limiter_reloads_its_script_when_redis_forgot_it(round_trips):
    # given a Redis that lost its script cache (restart, SCRIPT FLUSH)
    identity = f"test:{uuid.uuid4()}"
    get_redis_connection("default").script_flush()

    # when the limiter counts twice
    first = rate_limit_hit(scope="test", identity=identity, rate="5/60s")
    second = rate_limit_hit(scope="test", identity=identity, rate="5/60s")

    # then both counted; the script was sent once, and by its digest afterwards
    assert (first.remaining, second.remaining) == (4, 3)
    scripts = [trip.names[0] for trip in round_trips if trip.names[0].startswith("EVAL")]
    assert scripts == ["EVALSHA", "EVAL", "EVALSHA"]
