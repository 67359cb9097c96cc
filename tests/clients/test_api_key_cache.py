"""The API-key cache of this process (clients/key_cache.py): a known key costs no database
query; an invalidation from another process drops it; every write that can stop a key
publishes its invalidation after the commit; a fill that raced a revoke is dropped; a lost
listener stops the caching until it has subscribed again; unknown keys are never cached.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from io import StringIO

import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.urls import reverse

from clients.key_cache import api_key_cache
from clients.keys import api_key_generate, api_key_hash
from clients.models import ApiClient
from clients.selectors import api_client_get_by_key
from clients.services import api_client_revoke, api_client_rotate_key
from tests.admin_helpers import logged_in, make_staff
from tests.factories import make_api_client
from tests.polling import eventually

ORDERS = "/api/v1/orders/"


@pytest.fixture
def listening() -> None:
    """This process's key cache, its listener subscribed."""
    api_key_cache.get("")
    eventually(lambda: api_key_cache.trusted, timeout=5, what="the key cache's listener")


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


def channel() -> str:
    return api_key_cache._settings().channel


def subscribed(client: redis.Redis) -> redis.client.PubSub:
    """A subscriber on the key cache's channel (another process, in effect), confirmed."""
    subscriber = client.pubsub()
    subscriber.subscribe(channel())
    eventually(
        lambda: (subscriber.get_message(timeout=0.1) or {}).get("type") == "subscribe",
        timeout=5,
        what="subscribed",
    )
    return subscriber


def messages_within(subscriber: redis.client.PubSub, seconds: float) -> list[bytes]:
    received = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        message = subscriber.get_message(timeout=left)
        if message and message["type"] == "message":
            received.append(message["data"])
    return received


def lookup(key: str) -> tuple[ApiClient | None, int]:
    """The selector's answer for `key` and how many statements it sent to the clients table."""
    statements: list[str] = []

    def count(execute, sql, params, many, context):
        if "orders_apiclient" in sql:
            statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        client = api_client_get_by_key(key=key)
    return client, len(statements)


def cached(key: str) -> ApiClient:
    """Look `key` up until the answer comes from the cache (the listener may have just
    reconnected); fails if it never does."""
    return eventually(
        lambda: (found := lookup(key))[1] == 0 and found[0], timeout=5, what="a cached answer"
    )


@pytest.mark.django_db
def test_a_known_key_is_answered_without_the_database(listening, django_assert_num_queries):
    # given a client whose key was looked up once (from the database)
    row, key = make_api_client()
    assert lookup(key) == (row, 1)
    cached(key)

    # when it is looked up again
    with django_assert_num_queries(0):
        first = api_client_get_by_key(key=key)
        second = api_client_get_by_key(key=key)

    # then it is the same client, every field as stored, an instance per lookup
    assert first == row and first is not second
    for field in ApiClient._meta.concrete_fields:
        assert getattr(first, field.attname) == getattr(row, field.attname)
    assert first._state.adding is False and first._state.db == "default"
    first.name = "changed by a caller"
    assert second.name == row.name


@pytest.mark.django_db
def test_an_authenticated_api_request_sends_no_query_for_the_key(listening, api):
    # given a client whose key the API has seen
    _, key = make_api_client()
    api.credentials(HTTP_X_API_KEY=key)
    assert api.get(ORDERS).status_code == 200
    cached(key)

    # when it lists its orders
    statements: list[str] = []

    def record(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        response = api.get(ORDERS)

    # then it is served, and nothing asked the database about the key
    assert response.status_code == 200
    assert [sql for sql in statements if "orders_apiclient" in sql] == []


@pytest.mark.django_db
def test_an_unknown_key_is_not_cached_so_a_new_key_works_at_once(listening):
    # given a key nobody holds yet, refused
    key, prefix = api_key_generate()
    assert lookup(key) == (None, 1)
    assert lookup(key) == (None, 1)  # asked again: a refusal is never cached

    # when a client with that key is stored
    row = ApiClient.objects.create(name="new", key_prefix=prefix, key_hash=api_key_hash(key))

    # then the very next lookup finds it
    assert lookup(key) == (row, 1)


@pytest.mark.django_db
def test_an_invalidation_from_another_process_drops_that_client_only(listening, redis_client):
    # given two clients with cached keys
    (gone, gone_key), (kept, kept_key) = make_api_client(), make_api_client()
    cached(gone_key)
    cached(kept_key)

    # when another process publishes the first one's invalidation
    redis_client.publish(channel(), str(gone.pk))

    # then its entry leaves this process; the next lookup asks the database
    eventually(
        lambda: not api_key_cache.holds(api_key_hash(gone_key)), timeout=5, what="entry dropped"
    )
    assert lookup(gone_key) == (gone, 1)
    # and the other client's entry stays
    assert api_key_cache.holds(api_key_hash(kept_key))
    assert lookup(kept_key) == (kept, 0)


# ---------------------------------------------------------------- every path publishes


def _revoke_service(client: ApiClient) -> None:
    api_client_revoke(client_id=client.pk)


def _rotate_service(client: ApiClient) -> None:
    api_client_rotate_key(client_id=client.pk)


def _revoke_command(client: ApiClient) -> None:
    call_command("revoke_api_client", client.name, stderr=StringIO())


def _admin(user_groups: tuple[str, ...] = ("API client managers",)):
    return logged_in(make_staff("keys", *user_groups))


def _admin_revoke_action(client: ApiClient) -> None:
    response = _admin().post(
        reverse("admin:clients_apiclient_changelist"),
        {"action": "revoke_selected", "_selected_action": [client.pk]},
    )
    assert response.status_code == 302


def _admin_revoke_button(client: ApiClient) -> None:
    url = reverse("admin:clients_apiclient_change", args=[client.pk])
    response = _admin().post(url, {"name": client.name, "_revoke": "Revoke key"})
    assert response.status_code == 302


def _admin_rename(client: ApiClient) -> None:
    url = reverse("admin:clients_apiclient_change", args=[client.pk])
    response = _admin().post(url, {"name": f"{client.name}-renamed", "_save": "Save"})
    assert response.status_code == 302


def _deactivate_through_the_model(client: ApiClient) -> None:
    client.is_active = False
    client.save()


def _delete_the_row(client: ApiClient) -> None:
    ApiClient.objects.filter(pk=client.pk).delete()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "write",
    [
        _revoke_service,
        _rotate_service,
        _revoke_command,
        _admin_revoke_action,
        _admin_revoke_button,
        _admin_rename,
        _deactivate_through_the_model,
        _delete_the_row,
    ],
)
def test_every_write_that_can_stop_a_key_publishes_after_its_commit(
    write, listening, redis_client, django_capture_on_commit_callbacks
):
    # given a cached key, and a subscriber on the channel (another process, in effect)
    client, key = make_api_client()
    cached(key)
    subscriber = subscribed(redis_client)
    try:
        # when the write runs, its transaction not committed yet
        with django_capture_on_commit_callbacks(execute=False) as on_commit:
            write(client)

        # then this process dropped the entry at once, but nothing was published yet
        assert not api_key_cache.holds(api_key_hash(key))
        assert messages_within(subscriber, 0.3) == []

        # and when it commits, the client's invalidation goes out
        for callback in on_commit:
            callback()
        assert str(client.pk).encode() in messages_within(subscriber, 1.0)
    finally:
        subscriber.close()


# ---------------------------------------------------------------- races and losses


@pytest.mark.django_db(transaction=True)
def test_a_fill_whose_read_raced_a_revoke_is_dropped(listening, redis_client):
    # given a key that is not cached yet
    client, key = make_api_client()
    read_done, may_fill = threading.Event(), threading.Event()
    answers: list[ApiClient | None] = []

    def hold_after_the_read(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if "orders_apiclient" in sql:
            read_done.set()
            assert may_fill.wait(30)
        return result

    def request() -> None:
        try:
            with connection.execute_wrapper(hold_after_the_read):
                answers.append(api_client_get_by_key(key=key))
        finally:
            connection.close()

    # when a request reads the active row from the database, and before it fills the
    # cache another process revokes the key (its UPDATE, then its message)
    assert api_key_cache.trusted  # so the request takes a ticket it could fill with
    reader = threading.Thread(target=request)
    reader.start()
    assert read_done.wait(30)
    generation = api_key_cache.generation
    ApiClient.objects.filter(pk=client.pk).update(is_active=False)
    redis_client.publish(channel(), str(client.pk))
    eventually(lambda: api_key_cache.generation != generation, timeout=5, what="message applied")
    may_fill.set()
    reader.join(30)

    # then that request got the row it read, but the cache did not keep it
    assert answers == [client]
    assert not api_key_cache.holds(api_key_hash(key))
    assert lookup(key) == (None, 1)


@pytest.mark.django_db
def test_a_lost_listener_connection_empties_the_cache_until_it_subscribes_again(
    listening, redis_client
):
    # given a cached key
    client, key = make_api_client()
    cached(key)
    subscriptions = api_key_cache.subscriptions

    # when Redis drops this process's listener connection
    name = f"{api_key_cache.name}-listener-{os.getpid()}"
    ids = [c["id"] for c in redis_client.client_list() if c.get("name") == name]
    assert len(ids) == 1, ids
    redis_client.client_kill_filter(_id=ids[0])

    # then the listener subscribes again and starts empty: the next lookup asks the database
    eventually(lambda: api_key_cache.subscriptions > subscriptions, timeout=5, what="resubscribed")
    assert not api_key_cache.holds(api_key_hash(key))
    assert lookup(key) == (client, 1)
    assert cached(key) == client


@pytest.mark.django_db
@override_settings(API_KEY_CACHE_MAX_ENTRIES=2)
def test_the_cache_holds_at_most_max_entries_keys(listening):
    keys = [make_api_client()[1] for _ in range(3)]
    for key in keys:
        cached(key)
    assert [api_key_cache.holds(api_key_hash(key)) for key in keys] == [False, True, True]


@pytest.mark.django_db
@override_settings(API_KEY_CACHE_MAX_ENTRIES=0)
def test_max_entries_zero_reads_the_database_every_time(listening):
    client, key = make_api_client()
    assert [lookup(key) for _ in range(3)] == [(client, 1)] * 3
