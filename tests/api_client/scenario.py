"""A consumer's walk through the orders API, written against the generated client only.

tests/api_client/test_generated_client.py generates `orders_client` from the running
service's /api/schema/ with openapi-python-client, copies this module next to it, checks
both with `mypy --strict`, then imports this module and calls `walk`. It imports nothing
from the project: it is what an integrator would write, typed by the generated package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

from orders_client import AuthenticatedClient
from orders_client.api.orders import orders_cancel, orders_create, orders_retrieve
from orders_client.api.products import products_retrieve
from orders_client.models import (
    Order,
    OrderCreateRequest,
    OrderLineRequest,
    OrdersCreate409Problem,
    Product,
)
from orders_client.types import Response

T = TypeVar("T")


class UnexpectedAnswer(AssertionError):
    """The service answered something the walk did not expect (status and body inside)."""


@dataclass(frozen=True)
class Answer:
    """What one call returned: the parsed body, and the raw response around it."""

    status: int
    headers: dict[str, str]
    content: bytes


@dataclass(frozen=True)
class Walk:
    product_before: Product
    created: Order
    created_answer: Answer
    read: Order
    replayed: Order
    replayed_answer: Answer
    reused_key: OrdersCreate409Problem
    reused_key_answer: Answer
    cancelled: Order
    cancelled_answer: Answer
    product_after: Product


def _answer(response: Response[T]) -> Answer:
    return Answer(
        status=int(response.status_code),
        headers={name.lower(): value for name, value in response.headers.items()},
        content=response.content,
    )


def _product(client: AuthenticatedClient, product_id: UUID) -> Product:
    product = products_retrieve.sync(client=client, product_id=product_id)
    if not isinstance(product, Product):
        raise UnexpectedAnswer(f"reading product {product_id}: {product!r}")
    return product


def _order(response: Response[T], what: str) -> Order:
    if not isinstance(response.parsed, Order):
        raise UnexpectedAnswer(f"{what}: {response.status_code} {response.content!r}")
    return response.parsed


def walk(*, base_url: str, api_key: str, product_id: UUID, key: str) -> Walk:
    """Create an order for 2 units of the product with Idempotency-Key `key`, read it,
    replay the creation, reuse the key with another body, cancel it."""
    client = AuthenticatedClient(
        base_url=base_url,
        token=api_key,
        prefix="",
        auth_header_name="X-API-Key",
        raise_on_unexpected_status=True,
    )
    with client:
        product_before = _product(client, product_id)
        body = OrderCreateRequest(
            email="typed@example.com", items=[OrderLineRequest(product_id=product_id, quantity=2)]
        )

        created_response = orders_create.sync_detailed(
            client=client, body=body, idempotency_key=key
        )
        created = _order(created_response, "creating the order")

        read = orders_retrieve.sync(client=client, order_id=created.id)
        if not isinstance(read, Order):
            raise UnexpectedAnswer(f"reading the order: {read!r}")

        replayed_response = orders_create.sync_detailed(
            client=client, body=body, idempotency_key=key
        )
        replayed = _order(replayed_response, "replaying the creation")

        other_body = OrderCreateRequest(
            email="typed@example.com", items=[OrderLineRequest(product_id=product_id, quantity=1)]
        )
        reused_response = orders_create.sync_detailed(
            client=client, body=other_body, idempotency_key=key
        )
        if not isinstance(reused_response.parsed, OrdersCreate409Problem):
            raise UnexpectedAnswer(f"reusing the key: {reused_response.content!r}")

        cancelled_response = orders_cancel.sync_detailed(client=client, order_id=created.id)
        cancelled = _order(cancelled_response, "cancelling the order")

        return Walk(
            product_before=product_before,
            created=created,
            created_answer=_answer(created_response),
            read=read,
            replayed=replayed,
            replayed_answer=_answer(replayed_response),
            reused_key=reused_response.parsed,
            reused_key_answer=_answer(reused_response),
            cancelled=cancelled,
            cancelled_answer=_answer(cancelled_response),
            product_after=_product(client, product_id),
        )
