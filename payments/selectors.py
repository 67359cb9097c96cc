"""Reads of the payments app."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from orders.selectors import PaymentSummary
from payments.models import Payment, PaymentStatus


def payment_summaries_for_orders(order_ids: Sequence[UUID]) -> dict[UUID, PaymentSummary]:
    """The payment shown on each of these orders (one query for a page of orders), as
    orders.selectors.register_payment_summary_reader expects.

    A payment the provider has not been asked for yet (`requesting`, which is how every
    payment starts) is not shown: an order's `payment` stays null until the saga's first
    answer, a webhook or a cancellation moves it.
    """
    rows = (
        Payment.objects.filter(order_id__in=list(order_ids))
        .exclude(status=PaymentStatus.REQUESTING)
        .values_list("order_id", "status", "provider_payment_id")
    )
    return {
        order_id: PaymentSummary(status=status, provider_payment_id=provider_id or None)
        for order_id, status, provider_id in rows
    }
