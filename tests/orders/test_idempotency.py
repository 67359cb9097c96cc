"""Idempotent order creation (SPEC §3 "Idempotency"), one request at a time.

The concurrent cases (many identical requests at once) live in test_concurrency.py.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY

from catalog.models import Product
from orders.idempotency import (
    ClaimLost,
    StoredResponse,
    idempotency_claim,
    idempotent_execute,
    request_fingerprint,
)
from orders.models import IdempotencyRecord, IdempotencyStatus, Order, OrderItem
from orders.tasks import purge_expired_idempotency_records
from outbox.models import OutboxEvent
from tests.common.helpers import assert_problem
from tests.factories import make_api_client, make_product
from tests.orders.helpers import Snapshot, api_for, new_api, order_body, post_order

pytestmark = pytest.mark.django_db


def assert_replay_of(first, replay) -> None:
    """`replay` is `first` byte for byte, marked as a replay."""
    assert replay.status_code == first.status_code
    assert replay.content == first.content
    assert replay["Content-Type"] == first["Content-Type"]
    assert replay.get("Location") == first.get("Location")
    assert first["Idempotent-Replayed"] == "false"
    assert replay["Idempotent-Replayed"] == "true"


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- replay ------------------------------------------------------------------------------


def test_replay_is_byte_identical_and_changes_nothing():
    # given a created order
    _, _, http = new_api()
    product = make_product(stock=10)
    body = order_body([(product, 3)])
    first = post_order(http, body, key="retry-me")
    assert first.status_code == 201
    before = Snapshot.take()
    replayed_before = _metric("orders_idempotent_replays_total")

    # when the client retries with the same key and body, twice
    replays = [post_order(http, body, key="retry-me") for _ in range(2)]

    # then it gets the stored response again, and nothing else happens
    for replay in replays:
        assert_replay_of(first, replay)
        assert replay["Location"] == f"/api/v1/orders/{first.json()['id']}/"
    assert Snapshot.take() == before
    assert Order.objects.count() == 1
    assert Product.objects.get(pk=product.pk).stock == 7
    assert OutboxEvent.objects.filter(type="order.created").count() == 1
    assert _metric("orders_idempotent_replays_total") == replayed_before + 2


def test_rfc8941_quoted_key_equals_the_bare_key():
    # given an order created with the key in quoted form
    _, _, http = new_api()
    body = order_body([(make_product(), 1)])
    first = post_order(http, body, key='"abc"')
    assert first.status_code == 201

    # when retried with the bare form
    replay = post_order(http, body, key="abc")

    # then it is the same key
    assert_replay_of(first, replay)
    assert Order.objects.count() == 1
    assert IdempotencyRecord.objects.get().key == "abc"


def test_key_order_and_whitespace_do_not_change_the_fingerprint():
    # given an order sent as compact JSON
    _, _, http = new_api()
    product = make_product(stock=10)
    pid = str(product.pk)
    compact = f'{{"email":"a@example.com","items":[{{"product_id":"{pid}","quantity":2}}]}}'
    spaced = (
        '{\n  "items" : [ { "quantity" : 2 ,\t"product_id" : "' + pid + '" } ] ,\n'
        '  "email" : "a@example.com"\n}\n'
    )
    first = post_order(http, None, key="fmt", raw=compact)
    assert first.status_code == 201

    # when the same request is sent with keys reordered and other whitespace
    replay = post_order(http, None, key="fmt", raw=spaced)

    # then it is recognised as the same request
    assert_replay_of(first, replay)
    assert Product.objects.get(pk=product.pk).stock == 8


def test_key_reused_with_another_body_is_409_and_changes_nothing():
    # given an order created with key K
    _, _, http = new_api()
    product = make_product(stock=10)
    first = post_order(http, order_body([(product, 1)], email="a@example.com"), key="K")
    assert first.status_code == 201
    before = Snapshot.take()
    conflicts_before = _metric("orders_idempotency_conflicts_total", code="idempotency_key_reused")

    # when K is sent with a different body (other quantity, other email)
    for other in (
        order_body([(product, 2)], email="a@example.com"),
        order_body([(product, 1)], email="b@example.com"),
    ):
        response = post_order(http, other, key="K")
        # then
        assert_problem(response, status=409, code="idempotency_key_reused")

    assert Snapshot.take() == before
    assert (
        _metric("orders_idempotency_conflicts_total", code="idempotency_key_reused")
        == conflicts_before + 2
    )
    # and the original request still replays
    assert_replay_of(
        first, post_order(http, order_body([(product, 1)], email="a@example.com"), key="K")
    )


def test_keys_are_scoped_per_client():
    # given two clients
    _, _, alice = new_api()
    _, _, bob = new_api()
    product = make_product(stock=10)
    body = order_body([(product, 2)])

    # when both use the same key and body
    a = post_order(alice, body, key="shared-key")
    b = post_order(bob, body, key="shared-key")

    # then each gets its own order
    assert a.status_code == b.status_code == 201
    assert a["Idempotent-Replayed"] == b["Idempotent-Replayed"] == "false"
    assert a.json()["id"] != b.json()["id"]
    assert Order.objects.count() == 2
    assert Product.objects.get(pk=product.pk).stock == 6


# --- stored refusals ---------------------------------------------------------------------


def test_insufficient_stock_is_stored_and_replayed_even_after_restock():
    # given a refusal for lack of stock
    _, _, http = new_api()
    product = make_product(stock=1)
    body = order_body([(product, 2)])
    first = post_order(http, body, key="short")
    assert_problem(first, status=409, code="insufficient_stock")

    # when stock arrives and the client retries with the same key
    Product.objects.filter(pk=product.pk).update(stock=50)
    replay = post_order(http, body, key="short")

    # then the stored refusal is replayed; nothing is reserved
    assert_replay_of(first, replay)
    assert Order.objects.count() == 0
    assert Product.objects.get(pk=product.pk).stock == 50
    record = IdempotencyRecord.objects.get()
    assert (record.status, record.response_status) == (IdempotencyStatus.COMPLETED, 409)


def test_product_unavailable_is_stored_and_replayed():
    # given a refusal because the product is inactive
    _, _, http = new_api()
    product = make_product(is_active=False)
    body = order_body([(product, 1)])
    first = post_order(http, body, key="inactive")
    assert_problem(first, status=422, code="product_unavailable")

    # when the product is activated and the client retries
    Product.objects.filter(pk=product.pk).update(is_active=True)
    replay = post_order(http, body, key="inactive")

    # then the refusal is replayed
    assert_replay_of(first, replay)
    assert Order.objects.count() == 0


def test_validation_error_is_not_stored():
    # given a 400 for a key
    _, _, http = new_api()
    product = make_product(stock=5)
    bad = post_order(http, order_body([(product, 0)]), key="fix-me")
    assert_problem(bad, status=400, code="validation_error")
    assert IdempotencyRecord.objects.count() == 0

    # when the client fixes the body and retries with the same key
    good = post_order(http, order_body([(product, 1)]), key="fix-me")

    # then it runs afresh
    assert good.status_code == 201
    assert good["Idempotent-Replayed"] == "false"


def test_unauthenticated_request_is_not_stored():
    # given a 401 for a key
    _, key, http = new_api()
    body = order_body([(make_product(), 1)])
    denied = post_order(api_for(key + "x"), body, key="auth-key")
    assert_problem(denied, status=401, code="authentication_failed")

    # when retried with the right API key
    response = post_order(http, body, key="auth-key")

    # then
    assert response.status_code == 201
    assert response["Idempotent-Replayed"] == "false"


def test_rate_limited_request_is_not_stored(settings):
    # given a limit of one order per customer, already used
    settings.ORDER_RATE_LIMIT = "1/60s"
    _, _, http = new_api()
    product = make_product(stock=10)
    assert post_order(http, order_body([(product, 1)], email="c@example.com")).status_code == 201
    body = order_body([(product, 1)], email="c@example.com")
    limited = post_order(http, body, key="later")
    assert_problem(limited, status=429, code="rate_limited")
    assert not IdempotencyRecord.objects.filter(key="later").exists()

    # when the limit is lifted and the client retries with the same key
    settings.ORDER_RATE_LIMIT = "100/60s"
    retry = post_order(http, body, key="later")

    # then it runs afresh
    assert retry.status_code == 201
    assert retry["Idempotent-Replayed"] == "false"


# --- failures and crashes ----------------------------------------------------------------


@pytest.fixture
def outbox_insert_fails(transactional_db):
    """Make every INSERT into the outbox fail in PostgreSQL, i.e. after the stock update."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE OR REPLACE FUNCTION test_fail_outbox_insert() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION 'forced failure for a test'; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER test_fail_outbox_insert BEFORE INSERT ON outbox_outboxevent
            FOR EACH ROW EXECUTE FUNCTION test_fail_outbox_insert();
            """
        )

    def heal() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER IF EXISTS test_fail_outbox_insert ON outbox_outboxevent;"
                "DROP FUNCTION IF EXISTS test_fail_outbox_insert();"
            )

    try:
        yield heal
    finally:
        heal()


@pytest.mark.django_db(transaction=True)
def test_failure_after_stock_update_leaves_nothing_and_releases_the_key(outbox_insert_fails):
    # given an order whose outbox row cannot be written (stock is updated before it)
    _, _, http = new_api(raise_request_exception=False)
    product = make_product(stock=5)
    body = order_body([(product, 2)])
    before = Snapshot.take()

    # when it is placed
    failed = post_order(http, body, key="boom")

    # then 500 problem+json, and no trace of it anywhere
    assert_problem(failed, status=500, code="internal_error")
    assert Snapshot.take() == before
    assert (Order.objects.count(), OrderItem.objects.count(), OutboxEvent.objects.count()) == (
        0,
        0,
        0,
    )
    assert Product.objects.get(pk=product.pk).stock == 5
    assert IdempotencyRecord.objects.count() == 0

    # when the fault is gone and the client retries with the same key
    outbox_insert_fails()
    retry = post_order(http, body, key="boom")

    # then it succeeds as a first response
    assert retry.status_code == 201, retry.content
    assert retry["Idempotent-Replayed"] == "false"
    assert Product.objects.get(pk=product.pk).stock == 3
    assert OutboxEvent.objects.filter(type="order.created").count() == 1


def _abandoned_claim(*, client, key: str, body: dict, locked_until) -> IdempotencyRecord:
    """An in-progress record as left by a request that died while holding the key."""
    now = timezone.now()
    return IdempotencyRecord.objects.create(
        client=client,
        key=key,
        fingerprint=request_fingerprint(body),
        status=IdempotencyStatus.IN_PROGRESS,
        claim_token=uuid.uuid4(),
        locked_until=locked_until,
        expires_at=now + timedelta(days=1),
    )


def test_claim_of_a_dead_request_is_taken_over_after_its_lease():
    # given a key whose request died, its lease expired
    row, key, _ = new_api()
    http = api_for(key)
    product = make_product(stock=5)
    body = order_body([(product, 1)])
    record = _abandoned_claim(
        client=row, key="crashed", body=body, locked_until=timezone.now() - timedelta(seconds=1)
    )

    # when the client retries
    response = post_order(http, body, key="crashed")

    # then the retry takes the key over and succeeds
    assert response.status_code == 201, response.content
    assert response["Idempotent-Replayed"] == "false"
    record.refresh_from_db()
    assert record.status == IdempotencyStatus.COMPLETED
    assert str(record.order_id) == response.json()["id"]
    assert Product.objects.get(pk=product.pk).stock == 4


def test_claim_within_its_lease_is_in_use():
    # given a key whose request is still running
    row, key, _ = new_api()
    http = api_for(key)
    product = make_product(stock=5)
    body = order_body([(product, 1)])
    _abandoned_claim(
        client=row, key="running", body=body, locked_until=timezone.now() + timedelta(seconds=30)
    )
    before = Snapshot.take()

    # when the same request arrives
    response = post_order(http, body, key="running")

    # then 409 in use, with Retry-After, and nothing changes
    assert_problem(response, status=409, code="idempotency_key_in_use")
    assert int(response["Retry-After"]) >= 1
    assert Snapshot.take() == before


def test_a_request_whose_claim_was_taken_over_cannot_store_an_outcome():
    # given a claimed key
    client, _ = make_api_client()
    product = make_product(stock=5)
    fingerprint = request_fingerprint({"any": "body"})
    claim = idempotency_claim(client=client, key="slow", fingerprint=fingerprint)
    assert not isinstance(claim, StoredResponse)
    # and another request that took it over after the lease expired
    IdempotencyRecord.objects.filter(pk=claim.record_id).update(claim_token=uuid.uuid4())

    def operation() -> StoredResponse:
        Product.objects.filter(pk=product.pk).update(stock=0)
        return StoredResponse(status=201, body=b"{}")

    # when the slow request finishes
    with pytest.raises(ClaimLost):
        idempotent_execute(claim=claim, operation=operation, stored_errors=())

    # then its work is rolled back and the new owner's claim is untouched
    assert Product.objects.get(pk=product.pk).stock == 5
    record = IdempotencyRecord.objects.get()
    assert record.status == IdempotencyStatus.IN_PROGRESS


# --- purge -------------------------------------------------------------------------------


def test_purge_deletes_expired_records_only():
    # given records of every kind
    client, _ = make_api_client()
    now = timezone.now()

    def record(key, *, status, expires_in, locked_for):
        return IdempotencyRecord.objects.create(
            client=client,
            key=key,
            fingerprint="f" * 64,
            status=status,
            claim_token=uuid.uuid4(),
            locked_until=now + timedelta(seconds=locked_for),
            expires_at=now + timedelta(seconds=expires_in),
            response_status=201 if status == IdempotencyStatus.COMPLETED else None,
        )

    record("old-done", status=IdempotencyStatus.COMPLETED, expires_in=-10, locked_for=-3600)
    record("old-dead-claim", status=IdempotencyStatus.IN_PROGRESS, expires_in=-10, locked_for=-10)
    record("fresh-done", status=IdempotencyStatus.COMPLETED, expires_in=3600, locked_for=-1)
    record("fresh-claim", status=IdempotencyStatus.IN_PROGRESS, expires_in=3600, locked_for=30)
    record(
        "old-but-live-claim", status=IdempotencyStatus.IN_PROGRESS, expires_in=-10, locked_for=30
    )

    # when the beat task runs
    deleted = purge_expired_idempotency_records()

    # then only the expired, finished ones are gone
    assert deleted == 2
    assert set(IdempotencyRecord.objects.values_list("key", flat=True)) == {
        "fresh-done",
        "fresh-claim",
        "old-but-live-claim",
    }


def test_records_are_kept_for_the_configured_ttl(settings):
    # given
    settings.IDEMPOTENCY_KEY_TTL = 24 * 3600
    _, _, http = new_api()
    started = timezone.now()

    # when
    assert post_order(http, order_body([(make_product(), 1)])).status_code == 201

    # then the record lives at least 24 h
    record = IdempotencyRecord.objects.get()
    assert record.expires_at >= started + timedelta(hours=24)
    assert json.loads(bytes(record.response_body))["status"] == "pending_payment"


def test_failure_between_claim_and_execution_releases_the_key(settings):
    # given a limiter that cannot work (a broken rate setting makes it raise)
    settings.ORDER_RATE_LIMIT = "not-a-rate"
    _, _, http = new_api(raise_request_exception=False)
    product = make_product(stock=5)
    body = order_body([(product, 1)])
    failed = post_order(http, body, key="early-boom")
    assert_problem(failed, status=500, code="internal_error")
    assert IdempotencyRecord.objects.count() == 0

    # when it is fixed and the client retries at once
    settings.ORDER_RATE_LIMIT = "5/60s"
    retry = post_order(http, body, key="early-boom")

    # then the key was free: no "in use" until some lease runs out
    assert retry.status_code == 201, retry.content
    assert retry["Idempotent-Replayed"] == "false"


def test_body_with_a_lone_surrogate_gets_a_fingerprint():
    # given a valid order carrying an extra field whose JSON is a lone surrogate escape
    _, _, http = new_api(raise_request_exception=False)
    product = make_product(stock=5)
    raw = (
        f'{{"email": "a@example.com", "note": "\\ud800",'
        f' "items": [{{"product_id": "{product.pk}", "quantity": 1}}]}}'
    )

    # when it is sent twice with one key
    first = post_order(http, None, key="surrogate", raw=raw)
    replay = post_order(http, None, key="surrogate", raw=raw)

    # then it is an ordinary order and an ordinary replay, not a 500
    assert first.status_code == 201, first.content
    assert_replay_of(first, replay)
