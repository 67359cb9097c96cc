"""The order status history (OrderStatusChange): one row per status change, written in the
changing transaction by every path (API create and cancel, admin cancel, expiry, provider
webhooks), the backfill of orders older than the table, and the admin page that shows it."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.utils import timezone

from orders import selectors
from orders.history import StatusActor
from orders.models import ActorType, CancelReason, Order, OrderStatus, OrderStatusChange
from orders.selectors import PaymentSummary, register_payment_summary_reader
from orders.services import (
    InvalidTransition,
    OrderLine,
    _order_transition,
    order_create,
    order_expire_overdue,
    order_mark_paid,
    order_mark_refunded,
)
from outbox.models import OutboxEvent
from tests.admin_helpers import logged_in, make_staff
from tests.factories import make_api_client, make_product
from tests.orders.helpers import api_for, cancel_url, order_body, post_order
from tests.payments.helpers import WEBHOOK_SECRET, webhook_event
from tests.payments.test_webhooks import place_pending_order, post_webhook, signed_headers

PENDING, PAID = OrderStatus.PENDING_PAYMENT, OrderStatus.PAID
CANCELLED, REFUNDED = OrderStatus.CANCELLED, OrderStatus.REFUNDED
PROVIDER = (ActorType.PAYMENT_PROVIDER, "", "payment provider")


@pytest.fixture(autouse=True)
def webhook_secrets(settings):
    settings.PAYMENT_WEBHOOK_SECRETS = [WEBHOOK_SECRET]


def history(order_id) -> list[tuple]:
    """(old, new, version, reason, actor type, actor id, actor label), oldest first."""
    return list(
        OrderStatusChange.objects.filter(order_id=order_id)
        .order_by("event_version")
        .values_list(
            "old_status",
            "new_status",
            "event_version",
            "reason",
            "actor_type",
            "actor_id",
            "actor_label",
        )
    )


def created_by(client) -> tuple:
    return ("", PENDING, 1, "order placed", ActorType.API_CLIENT, str(client.pk), client.name)


def send_webhook(event_type: str, placed, *, request_id: str) -> dict:
    body = json.dumps(
        webhook_event(event_type, order=placed.order, payment_id=placed.payment_id)
    ).encode()
    headers = signed_headers(body) | {"X-Request-ID": request_id}
    response = post_webhook(body, headers)
    assert response.status_code == 200, response.content
    return response.json()


# --- every path writes exactly its rows ---------------------------------------------------


@pytest.mark.django_db
def test_an_order_placed_through_the_api_starts_its_history_with_its_client():
    # given an API client
    client, key = make_api_client()
    product = make_product(stock=5)

    # when it places an order with a request id
    response = post_order(api_for(key), order_body([(product, 2)]))
    assert response.status_code == 201, response.content
    order_id = response.json()["id"]

    # then one creation row names the client, with the time of the order and the request id
    assert history(order_id) == [created_by(client)]
    row = OrderStatusChange.objects.get(order_id=order_id)
    order = Order.objects.get(pk=order_id)
    assert row.created_at == order.created_at
    assert row.correlation_id == response["X-Request-ID"]


@pytest.mark.django_db
def test_a_customer_cancel_through_the_api_is_recorded_with_the_client_and_reason():
    # given a pending order of a client
    client, key = make_api_client()
    order = order_create(
        client=client, email="a@example.com", lines=[OrderLine(make_product().pk, 1)]
    )

    # when the client cancels it through the API
    response = api_for(key).post(cancel_url(order.pk), HTTP_X_REQUEST_ID="req-cancel-1")
    assert response.status_code == 200, response.content

    # then a second row names the client and the reason, with the request id
    assert history(order.pk) == [
        created_by(client),
        (
            PENDING,
            CANCELLED,
            2,
            CancelReason.CUSTOMER_REQUESTED,
            ActorType.API_CLIENT,
            str(client.pk),
            client.name,
        ),
    ]
    cancelled = OrderStatusChange.objects.get(order_id=order.pk, new_status=CANCELLED)
    assert cancelled.correlation_id == "req-cancel-1"
    assert cancelled.created_at == Order.objects.get(pk=order.pk).cancelled_at

    # and cancelling again (idempotent) writes nothing more
    assert api_for(key).post(cancel_url(order.pk)).status_code == 200
    assert len(history(order.pk)) == 2


@pytest.mark.django_db
def test_a_staff_cancel_in_the_admin_is_recorded_with_the_staff_user():
    # given a pending order and a superuser in the admin
    client, _ = make_api_client()
    order = order_create(
        client=client, email="a@example.com", lines=[OrderLine(make_product().pk, 1)]
    )
    staff = make_staff("cancelling-manager", superuser=True)

    # when they cancel it with the admin action
    response = logged_in(staff).post(
        reverse("admin:orders_order_changelist"),
        {"action": "cancel_orders", "_selected_action": [str(order.pk)]},
    )
    assert response.status_code == 302

    # then the row names the staff user and the staff reason
    assert history(order.pk) == [
        created_by(client),
        (
            PENDING,
            CANCELLED,
            2,
            CancelReason.STAFF_CANCELLED,
            ActorType.STAFF,
            str(staff.pk),
            "cancelling-manager",
        ),
    ]


@pytest.mark.django_db
def test_expiry_is_recorded_as_the_system():
    # given a pending order whose payment deadline passed
    client, _ = make_api_client()
    order = order_create(
        client=client, email="a@example.com", lines=[OrderLine(make_product().pk, 1)]
    )
    Order.objects.filter(pk=order.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    # when the expiry task's service runs
    assert order_expire_overdue() == 1

    # then the row names the system and the expiry reason
    assert history(order.pk) == [
        created_by(client),
        (PENDING, CANCELLED, 2, CancelReason.PAYMENT_EXPIRED, ActorType.SYSTEM, "", "system"),
    ]


@pytest.mark.django_db
def test_a_success_then_a_refund_webhook_are_recorded_as_the_provider():
    # given a pending order whose payment the provider accepted
    placed = place_pending_order()

    # when the provider reports the success, then a refund
    assert send_webhook("payment.succeeded", placed, request_id="req-paid")["status"] == "applied"
    assert send_webhook("refund.succeeded", placed, request_id="req-refund")["status"] == "applied"

    # then paid and refunded rows name the provider, each with its webhook's request id
    assert history(placed.order.pk) == [
        created_by(placed.order.client),
        (PENDING, PAID, 2, "payment succeeded", *PROVIDER),
        (PAID, REFUNDED, 3, "payment refunded", *PROVIDER),
    ]
    rows = OrderStatusChange.objects.filter(order_id=placed.order.pk).order_by("event_version")
    assert [row.correlation_id for row in rows[1:]] == ["req-paid", "req-refund"]
    order = Order.objects.get(pk=placed.order.pk)
    assert rows[1].created_at == order.paid_at


@pytest.mark.django_db
def test_a_failure_webhook_is_recorded_as_the_provider_with_the_failure_reason():
    # given a pending order whose payment the provider accepted
    placed = place_pending_order()

    # when the provider reports the payment failed (twice: a redelivery with a new id)
    assert send_webhook("payment.failed", placed, request_id="req-failed")["status"] == "applied"
    send_webhook("payment.failed", placed, request_id="req-failed-again")

    # then exactly one cancel row names the provider and payment_failed
    assert history(placed.order.pk) == [
        created_by(placed.order.client),
        (PENDING, CANCELLED, 2, CancelReason.PAYMENT_FAILED, *PROVIDER),
    ]


# --- nothing is written for a change that did not happen ----------------------------------


@pytest.mark.django_db
def test_a_rolled_back_transition_writes_no_row():
    # given a pending order
    client, _ = make_api_client()
    order = order_create(
        client=client, email="a@example.com", lines=[OrderLine(make_product().pk, 1)]
    )

    # when it is paid in a transaction that then rolls back
    with pytest.raises(RuntimeError), transaction.atomic():
        order_mark_paid(order_id=order.pk)
        assert len(history(order.pk)) == 2  # written in the same transaction...
        raise RuntimeError("something later in the transaction failed")

    # then only the creation row is left, and the order is still pending
    assert history(order.pk) == [created_by(client)]
    assert Order.objects.get(pk=order.pk).status == PENDING


@pytest.mark.django_db
def test_a_transition_that_loses_its_race_writes_no_row():
    # given a stale copy of an order someone else paid meanwhile
    client, _ = make_api_client()
    order = order_create(
        client=client, email="a@example.com", lines=[OrderLine(make_product().pk, 1)]
    )
    stale = Order.objects.get(pk=order.pk)
    order_mark_paid(order_id=order.pk)

    # when the stale copy tries to cancel
    with pytest.raises(InvalidTransition):
        _order_transition(
            order=stale,
            to=CANCELLED,
            actor=StatusActor.for_client(client),
            reason=CancelReason.CUSTOMER_REQUESTED,
        )

    # then the history holds the creation and the payment only
    assert [row[:2] for row in history(order.pk)] == [("", PENDING), (PENDING, PAID)]


# --- the backfill of orders older than the history ---------------------------------------

BEFORE = [("orders", "0005_apiclient_moved_to_clients")]
WITH_HISTORY = [("orders", "0006_orderstatuschange")]


def _old_order(apps, client, **fields):
    """An order as 0005's code stored it, created at a known time in the past."""
    Order = apps.get_model("orders", "Order")
    created_at = timezone.now() - timedelta(days=30)
    order = Order.objects.create(
        client_id=client.pk,
        email="old@example.com",
        total=Decimal("10.00"),
        currency="EUR",
        expires_at=created_at + timedelta(minutes=15),
        **fields,
    )
    Order.objects.filter(pk=order.pk).update(created_at=created_at)
    return order.pk, created_at


@pytest.mark.django_db(transaction=True)
def test_the_migration_backfills_the_history_of_existing_orders():
    # given the database as it was before the history table, with orders in every state
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    apps = executor.loader.project_state(BEFORE).apps
    client, _ = make_api_client()
    day = timezone.now() - timedelta(days=29)
    pending, created = _old_order(apps, client)
    paid, _ = _old_order(apps, client, status=PAID, paid_at=day, event_version=2)
    refunded, _ = _old_order(apps, client, status=REFUNDED, paid_at=day, event_version=3)
    cancels = {
        reason: _old_order(
            apps,
            client,
            status=CANCELLED,
            cancel_reason=reason,
            cancelled_at=day,
            event_version=2,
        )[0]
        for reason in CancelReason
    }

    # when the history migration runs
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(WITH_HISTORY)

    # then every order has the rows its row implies, marked as backfilled
    backfilled = f"{client.name} (backfilled from the order row)"
    placed = ("", PENDING, 1, "order placed", ActorType.API_CLIENT, str(client.pk), backfilled)
    provider = (ActorType.PAYMENT_PROVIDER, "", "payment provider (backfilled from the order row)")
    assert history(pending) == [placed]
    assert OrderStatusChange.objects.get(order_id=pending).created_at == created
    assert history(paid) == [placed, (PENDING, PAID, 2, "payment succeeded", *provider)]
    assert history(refunded) == [
        placed,
        (PENDING, PAID, 2, "payment succeeded", *provider),
        (PAID, REFUNDED, 3, "payment refunded", *provider),
    ]
    cancel_actors = {reason: history(order_id)[1][3:5] for reason, order_id in cancels.items()}
    assert cancel_actors == {
        CancelReason.CUSTOMER_REQUESTED: (CancelReason.CUSTOMER_REQUESTED, ActorType.API_CLIENT),
        CancelReason.STAFF_CANCELLED: (CancelReason.STAFF_CANCELLED, ActorType.STAFF),
        CancelReason.PAYMENT_FAILED: (CancelReason.PAYMENT_FAILED, ActorType.PAYMENT_PROVIDER),
        CancelReason.PAYMENT_EXPIRED: (CancelReason.PAYMENT_EXPIRED, ActorType.SYSTEM),
    }
    assert all(history(order_id)[1][:3] == (PENDING, CANCELLED, 2) for order_id in cancels.values())

    # and the migration reverses, and runs again without doubling anything
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert OrderStatusChange.objects.count() == 3 + 3 + 2 * len(CancelReason)


# --- the admin page -----------------------------------------------------------------------


@pytest.fixture
def payment_reader():
    """Registers a payment reader for the test (what the payments app registers at start-up),
    and puts the one that was registered back afterwards."""
    previous = selectors._payment_summary_reader
    summaries: dict = {}
    register_payment_summary_reader(
        lambda order_ids: {i: summaries[i] for i in order_ids if i in summaries}
    )
    yield summaries
    selectors._payment_summary_reader = previous


@pytest.mark.django_db
def test_the_order_page_shows_the_status_history_newest_last_and_the_payment(payment_reader):
    # given an order placed by a client, paid, then refunded by the provider
    client, _ = make_api_client(name="history-shop")
    order = order_create(
        client=client, email="a@example.com", lines=[OrderLine(make_product().pk, 1)]
    )
    order_mark_paid(order_id=order.pk)
    order_mark_refunded(order_id=order.pk)
    payment_reader[order.pk] = PaymentSummary(status="refunded", provider_payment_id="pay_xyz")
    # and a staff user who may only view orders
    viewer = make_staff("order-viewer")
    viewer.user_permissions.add(Permission.objects.get(codename="view_order"))

    # when they open the order's page
    page = logged_in(viewer).get(reverse("admin:orders_order_change", args=[order.pk]))

    # then the status history is there, oldest first and newest last, with who and why
    assert page.status_code == 200
    html = page.content.decode()
    assert "Status history" in html
    placed_at = html.index("order placed")
    paid_at = html.index("payment succeeded")
    refunded_at = html.index("payment refunded")
    assert placed_at < paid_at < refunded_at
    assert "history-shop" in html and "payment provider" in html
    # and the payment, read through the payments hook
    assert '<div class="readonly">pay_xyz</div>' in html
    assert '<div class="readonly">refunded</div>' in html
    # and the event deliveries still link to the outbox rows
    events = OutboxEvent.objects.filter(aggregate_id=str(order.pk))
    assert events.count() == 3
    assert all(reverse("admin:outbox_outboxevent_change", args=[e.pk]) in html for e in events)
