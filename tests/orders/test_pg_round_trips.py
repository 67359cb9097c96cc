"""PostgreSQL round trips per order creation (issue 11: at most 3).

Counted on the wire: the connection's protocol is traced (libpq's trace) while the API
creates an order, and every message that makes the client wait for the server is a round
trip: a simple `Query`, or the `Sync` that ends an extended-protocol exchange.
"""

from __future__ import annotations

import os
import re
import tempfile

import pytest
from django.db import connection

from catalog.models import Product
from orders.models import Order
from outbox.models import OutboxEvent
from payments.models import Payment
from tests.factories import make_product
from tests.orders.helpers import new_api, order_body, post_order

pytestmark = pytest.mark.django_db(transaction=True)


# A message line of libpq's trace: timestamp, direction, length, message type, contents.
_WAITING_MESSAGE = re.compile(r"^[^\t]*\tF\t\d+\t(Query|Sync)\b(.*)$", re.MULTILINE)


def _round_trips(trace_text: str) -> list[str]:
    """The frontend messages that wait for an answer, each with the start of what it sent."""
    return [f"{kind}{contents[:150]}" for kind, contents in _WAITING_MESSAGE.findall(trace_text)]


def _traced(call):
    connection.ensure_connection()
    with tempfile.TemporaryFile(mode="w+") as trace:
        connection.connection.pgconn.trace(trace.fileno())
        try:
            result = call()
        finally:
            connection.connection.pgconn.untrace()
        trace.flush()
        os.lseek(trace.fileno(), 0, os.SEEK_SET)
        return result, _round_trips(trace.read())


def test_an_order_creation_takes_at_most_three_round_trips():
    # given an API client that has made a request already (its key is known) and products
    _, _, http = new_api()
    first, second = make_product(stock=10), make_product(stock=10)
    assert post_order(http, order_body([(first, 1)])).status_code == 201
    # when it creates an order of two lines
    created, trips = _traced(lambda: post_order(http, order_body([(first, 2), (second, 3)])))
    # then the order, its payment and its event exist and the stock was taken ...
    assert created.status_code == 201, created.content
    order_id = created.json()["id"]
    assert Order.objects.filter(pk=order_id).exists()
    assert Payment.objects.filter(order_id=order_id).exists()
    assert OutboxEvent.objects.filter(aggregate_id=order_id, type="order.created").exists()
    assert Product.objects.get(pk=first.pk).stock == 7
    assert Product.objects.get(pk=second.pk).stock == 7
    # ... in at most three round trips: the claim, the products' read, the unit of work
    print(f"{len(trips)} PostgreSQL round trips:\n" + "\n".join(trips))
    assert len(trips) <= 3
