"""The admin's searches and filters at scale (issue 11): a search runs once per page and the
page then reads the rows it found by id, showing exactly what the plain search shows; a list
filter's values found by index seeks are the values a DISTINCT finds."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.admin_paginator import distinct_values_by_seek
from orders.admin import OrderAdmin
from orders.models import Order, OrderStatus
from outbox.models import OutboxEvent
from tests.orders.helpers import unique_email
from tests.orders.test_admin_counts import hours_ago, make_orders

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/orders/order/"


@pytest.fixture
def staff() -> Client:
    user = get_user_model().objects.create_superuser(username=unique_email(), password=None)
    http = Client()
    http.force_login(user)
    return http


def searching(sql: str) -> bool:
    """Whether a statement runs the e-mail search itself (the trigram-served LIKE)."""
    return '"email"::text) LIKE' in sql


def test_a_selective_search_runs_once_and_the_page_reads_its_rows_by_id(staff, api_client_and_key):
    # given three orders of one address (one of them paid) among others
    email = unique_email()
    found = make_orders(api_client_and_key[0], created=hours_ago(1, 2, 30 * 24), email=email)
    make_orders(api_client_and_key[0], created=hours_ago(3, 4))
    Order.objects.filter(pk=found[0].pk).update(status=OrderStatus.PAID, paid_at=timezone.now())

    # when staff search for part of the address
    with CaptureQueriesContext(connection) as queries:
        response = staff.get(CHANGELIST, {"q": email[3:].upper()})

    # then the page lists exactly those orders, newest first, and counts them...
    assert list(response.context["cl"].result_list) == found
    assert response.context["cl"].result_count == 3
    # ...having searched once: the count, the date hierarchy and the rows read them by id
    sqls = [query["sql"] for query in queries.captured_queries]
    assert sum(searching(sql) for sql in sqls) == 1
    by_id = [sql for sql in sqls if '"orders_order"."id" IN (' in sql]
    assert len(by_id) >= 3  # the count, the date bounds, the rows


def test_a_search_with_a_filter_reads_the_filtered_rows_by_id(staff, api_client_and_key):
    # given two orders of one address, one paid
    email = unique_email()
    found = make_orders(api_client_and_key[0], created=hours_ago(1, 2), email=email)
    Order.objects.filter(pk=found[1].pk).update(status=OrderStatus.PAID, paid_at=timezone.now())

    # when staff search that address among paid orders
    response = staff.get(CHANGELIST, {"q": email, "status__exact": "paid"})

    # then only the paid one is listed
    assert list(response.context["cl"].result_list) == [found[1]]


def test_an_unselective_search_is_left_as_django_makes_it(staff, api_client_and_key, monkeypatch):
    # given more orders of one domain than the admin resolves to ids (a cap of 2 here)
    monkeypatch.setattr(OrderAdmin, "search_ids_cap", 2)
    domain = f"@{uuid.uuid4().hex[:10]}.example.com"
    found = make_orders(api_client_and_key[0], created=hours_ago(1, 2, 3))
    for number, order in enumerate(found):
        Order.objects.filter(pk=order.pk).update(email=f"buyer{number}{domain}")
    make_orders(api_client_and_key[0], created=hours_ago(4))

    # when staff search for the domain
    with CaptureQueriesContext(connection) as queries:
        response = staff.get(CHANGELIST, {"q": domain})

    # then the page still lists all three (the search runs in each query, as before)
    assert list(response.context["cl"].result_list) == found
    assert response.context["cl"].result_count == 3
    assert sum(searching(query["sql"]) for query in queries.captured_queries) > 1


def test_an_order_is_found_by_its_id(staff, api_client_and_key):
    # given orders created a day apart
    orders = make_orders(api_client_and_key[0], created=hours_ago(1, 25))

    # when staff search for the older one's id, in capitals
    response = staff.get(CHANGELIST, {"q": str(orders[1].pk).upper()})

    # then it alone is listed
    assert list(response.context["cl"].result_list) == [orders[1]]


def outbox_event(aggregate_type: str) -> OutboxEvent:
    now = timezone.now()
    return OutboxEvent.objects.create(
        type="test.happened",
        aggregate_type=aggregate_type,
        aggregate_id=uuid.uuid4().hex[:12],
        version=1,
        occurred_at=now,
        payload={},
        next_attempt_at=now + timedelta(seconds=1),
    )


def test_values_found_by_index_seeks_are_the_distinct_values(staff):
    # given events of three aggregate types, several of each
    for aggregate_type in ("order", "payment", "order", "zeta", "payment", "order"):
        outbox_event(aggregate_type)

    # when the distinct values are found by seeks, and the outbox list offers its filter
    by_seek = distinct_values_by_seek(OutboxEvent, "aggregate_type")
    response = staff.get("/admin/outbox/outboxevent/")

    # then they are what a DISTINCT finds, in order, and the filter offers exactly those
    distinct = list(
        OutboxEvent.objects.order_by("aggregate_type")
        .values_list("aggregate_type", flat=True)
        .distinct()
    )
    assert by_seek == distinct == ["order", "payment", "zeta"]
    (spec,) = [
        spec
        for spec in response.context["cl"].filter_specs
        if getattr(spec, "field_path", None) == "aggregate_type"
    ]
    assert list(spec.lookup_choices) == distinct
    filtered = staff.get("/admin/outbox/outboxevent/", {"aggregate_type": "payment"})
    assert {event.aggregate_type for event in filtered.context["cl"].result_list} == {"payment"}
    assert filtered.context["cl"].result_count == 2


def test_the_outbox_type_filter_offers_the_contracts_types_without_reading_the_table(staff):
    # given events of two types
    for event_type in ("order.paid", "payment.refunded", "order.paid"):
        OutboxEvent.objects.filter(pk=outbox_event("order").pk).update(type=event_type)

    # when the outbox list is shown
    with CaptureQueriesContext(connection) as queries:
        response = staff.get("/admin/outbox/outboxevent/")

    # then the type filter offers every type of the published contract, found without a
    # DISTINCT over the table, and filtering by one shows its events only
    (spec,) = [
        spec
        for spec in response.context["cl"].filter_specs
        if getattr(spec, "field_path", None) == "type"
    ]
    assert list(spec.lookup_choices) == [
        "order.cancelled",
        "order.created",
        "order.paid",
        "order.refunded",
        "payment.refunded",
    ]
    assert not [q["sql"] for q in queries.captured_queries if "DISTINCT" in q["sql"].upper()]
    filtered = staff.get("/admin/outbox/outboxevent/", {"type__exact": "order.paid"})
    assert {event.type for event in filtered.context["cl"].result_list} == {"order.paid"}
    assert filtered.context["cl"].result_count == 2


def test_a_search_that_finds_nothing_shows_an_empty_page(staff, api_client_and_key):
    # given orders, none of them of this address
    make_orders(api_client_and_key[0], created=hours_ago(1, 2))

    # when staff search for it
    response = staff.get(CHANGELIST, {"q": unique_email()})

    # then the page lists nothing (its date hierarchy included: no bucket to find)
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []
    assert response.context["cl"].result_count == 0
