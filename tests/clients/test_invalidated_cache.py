"""The per-process invalidated cache (core/invalidated_cache.py) against the real Redis,
through a relay the tests can hang or cut: nothing is served unless the listener proves
it hears every message, a message drops its tag's entries, a fill that raced an
invalidation is dropped, and the size and age limits hold.

Each test uses a cache of its own, on a channel of its own, with a short bound (0.2 s),
and publishes as another process would: with a Redis client of its own, straight to
Redis (not through the relay).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings

from core.invalidated_cache import EVERY_TAG, CacheSettings, InvalidatedCache
from tests.polling import eventually, stays_false
from tests.redis_relay import RedisRelay

BOUND = 0.2


@pytest.fixture
def relay() -> Iterator[RedisRelay]:
    relay = RedisRelay.to(settings.REDIS_URL)
    yield relay
    relay.close()


@pytest.fixture
def publisher() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


def make_cache(
    url: str, *, max_entries: int = 100, max_age: float = 60.0, bound: float = BOUND
) -> InvalidatedCache[str]:
    config = CacheSettings(
        channel=f"{settings.CACHES['default']['KEY_PREFIX']}:test-cache:{uuid.uuid4().hex}",
        max_entries=max_entries,
        bound=bound,
        max_age=max_age,
    )
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return InvalidatedCache(
        name=f"test-{uuid.uuid4().hex[:8]}", settings=lambda: config, redis_client=lambda: client
    )


@pytest.fixture
def caches() -> Iterator[list[InvalidatedCache]]:
    made: list[InvalidatedCache] = []
    yield made
    for cache in made:
        cache.close()


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def cache(request, relay, caches) -> InvalidatedCache[str]:
    """A cache whose listener talks to Redis through the relay (RESP2 or RESP3), trusted."""
    made = make_cache(f"{relay.url}?protocol={request.param}")
    caches.append(made)
    listening(made)
    return made


def listening(cache: InvalidatedCache) -> None:
    cache.get("")  # the first lookup starts the listener
    eventually(lambda: cache.trusted, timeout=5, what="the listener subscribed")


def channel_of(cache: InvalidatedCache) -> str:
    return cache._settings().channel


def fill(cache: InvalidatedCache, key: str, value: str, *, tag: str) -> None:
    assert cache.put(key, value, tag=tag, ticket=cache.fill_ticket())


def test_nothing_is_served_or_filled_before_the_listener_has_subscribed(relay, caches):
    # given a Redis the listener cannot reach yet
    relay.cut()
    cache = make_cache(relay.url)
    caches.append(cache)

    # when lookups come
    # then every one misses, and no fill is kept
    assert cache.get("k") is None
    assert cache.fill_ticket() is None
    assert not cache.put("k", "v", tag="t", ticket=cache.generation)
    stays_false(lambda: cache.trusted, window=3 * BOUND, what="trusted without Redis")
    assert cache.get("k") is None and not cache.holds("k")

    # when Redis is reachable, the listener subscribes and fills are kept from then on
    relay.restore()
    eventually(lambda: cache.trusted, timeout=5, what="the listener subscribed")
    fill(cache, "k", "v", tag="t")
    assert cache.get("k") == "v"


def test_a_message_drops_the_entries_of_its_tag_only(cache, publisher):
    # given entries of two tags
    fill(cache, "a1", "A", tag="a")
    fill(cache, "a2", "A", tag="a")
    fill(cache, "b1", "B", tag="b")

    # when another process publishes tag "a"
    publisher.publish(channel_of(cache), "a")

    # then a's entries go, b's stays and is still served
    eventually(lambda: not cache.holds("a1") and not cache.holds("a2"), timeout=5, what="a gone")
    assert cache.get("b1") == "B"

    # and the tag for every entry clears the rest
    publisher.publish(channel_of(cache), EVERY_TAG)
    eventually(lambda: not cache.holds("b1"), timeout=5, what="everything gone")


def test_a_fill_whose_read_raced_an_invalidation_is_dropped(cache, publisher):
    # given a caller that took its ticket and is reading the source
    ticket = cache.fill_ticket()
    assert ticket is not None

    # when an invalidation lands before it fills (another process published it)
    publisher.publish(channel_of(cache), "whatever")
    eventually(lambda: cache.generation != ticket, timeout=5, what="the message applied")

    # then its fill is not kept: the invalidation wins
    assert not cache.put("k", "stale", tag="whatever", ticket=ticket)
    assert cache.get("k") is None and not cache.holds("k")
    # while a fill with a ticket taken after it is
    fill(cache, "k", "fresh", tag="whatever")
    assert cache.get("k") == "fresh"


def test_a_local_forget_voids_fills_in_flight_too(cache):
    ticket = cache.fill_ticket()
    cache.forget("t")
    assert not cache.put("k", "stale", tag="t", ticket=ticket)


def test_a_hung_connection_stops_the_serving_before_the_listener_reconnects(relay, caches):
    # given a cached entry (a bound of 1 s: the listener gives a silent connection up after
    # 3 bounds, which leaves this test 2 s to see the refusal come first)
    cache = make_cache(relay.url, bound=1.0)
    caches.append(cache)
    listening(cache)
    fill(cache, "k", "v", tag="t")
    subscriptions, losses = cache.subscriptions, cache.losses

    # when the listener's connection goes silent (open, but nothing passes)
    relay.freeze()
    frozen_at = time.monotonic()

    # then the entry stops being served, and fills stop, while that connection is still
    # the listener's: its unanswered pings, not a reconnection, took the trust away
    eventually(lambda: cache.get("k") is None, timeout=5, interval=0.01, what="the entry refused")
    refused_after = time.monotonic() - frozen_at
    assert (cache.losses, cache.subscriptions) == (losses, subscriptions)
    assert cache.fill_ticket() is None
    print(f"hung connection: entry refused {refused_after:.3f}s after the freeze (bound 1 s)")

    # and the listener gives the silent connection up, subscribes anew, starts empty
    eventually(lambda: cache.subscriptions > subscriptions, timeout=10, what="resubscribed")
    eventually(lambda: cache.trusted, timeout=5, what="trusted again")
    assert cache.losses > losses
    assert not cache.holds("k")


def test_a_message_published_while_the_listener_was_away_is_not_needed(cache, relay, publisher):
    # given a cached entry
    fill(cache, "k", "v", tag="t")
    subscriptions = cache.subscriptions

    # when the listener's connection is cut and cannot come back for a while
    relay.cut()
    eventually(lambda: not cache.trusted, timeout=5, what="the loss noticed")
    assert cache.get("k") is None
    # and the entry's invalidation is published meanwhile (lost for this listener)
    publisher.publish(channel_of(cache), "t")
    relay.restore()

    # then after it subscribes again the entry is gone all the same
    eventually(lambda: cache.subscriptions > subscriptions, timeout=5, what="resubscribed")
    eventually(lambda: cache.trusted, timeout=5, what="trusted again")
    assert not cache.holds("k")
    assert cache.get("k") is None


def test_the_least_recently_used_entry_goes_first(relay, caches):
    cache = make_cache(relay.url, max_entries=2)
    caches.append(cache)
    listening(cache)
    fill(cache, "a", "A", tag="a")
    fill(cache, "b", "B", tag="b")
    assert cache.get("a") == "A"  # now b is the least recently used

    fill(cache, "c", "C", tag="c")

    assert [cache.holds(key) for key in "abc"] == [True, False, True]


def test_entries_expire_after_max_age(relay, caches):
    cache = make_cache(relay.url, max_age=0.05)
    caches.append(cache)
    listening(cache)
    fill(cache, "k", "v", tag="t")
    eventually(lambda: cache.get("k") is None, timeout=2, what="expired")
    assert not cache.holds("k")


def test_max_entries_zero_turns_the_cache_off(relay, caches):
    cache = make_cache(relay.url, max_entries=0)
    caches.append(cache)
    listening(cache)
    assert not cache.put("k", "v", tag="t", ticket=cache.fill_ticket())
    assert cache.get("k") is None


def test_a_forked_child_starts_empty_untrusted_and_listens_on_its_own(cache):
    # given a parent with a trusted, filled cache
    fill(cache, "k", "v", tag="t")

    # when it forks (as a gunicorn master would with preloading)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        code = 1
        try:
            inherited = cache.holds("k") or cache.trusted
            cache.get("k")  # starts the child's own listener
            deadline = time.monotonic() + 10
            while not cache.trusted and time.monotonic() < deadline:
                time.sleep(0.01)
            code = 0 if (not inherited and cache.trusted) else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    try:
        answer = os.read(read, 1)
    finally:
        os.close(read)
        os.waitpid(pid, 0)

    # then the child inherited no entry and no trust, and its own listener subscribed
    assert answer == bytes([0])
    # and the parent's cache is untouched
    assert cache.get("k") == "v"
