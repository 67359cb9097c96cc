"""How payments reacts to order events: in the order's own transaction, under its locks
(registered with outbox.subscribers in PaymentsConfig.ready()).

A reaction only records what is owed to the provider; the saga's steps (steps.py) make
the calls later, with no transaction open.
"""

from __future__ import annotations

from decimal import Decimal

from django.utils import timezone

from core.unit_of_work import UnitOfWork
from outbox.services import EventEnvelope
from payments.models import Payment, PaymentStatus
from payments.nudge import payment_steps_nudge_on_commit
from payments.services import payment_transition

# A payment the provider may still take money for: cancelling its order must stop it.
IN_FLIGHT = (PaymentStatus.REQUESTING, PaymentStatus.PENDING)


def payment_open_for_order(event: EventEnvelope) -> None:
    """order.created: owe the provider a payment request for the order total."""
    _payment_owed_for(event).save(force_insert=True)
    payment_steps_nudge_on_commit()


def payment_open_for_order_in(event: EventEnvelope, work: UnitOfWork) -> None:
    """payment_open_for_order when the order is created as one unit of work."""
    work.insert("payments.payment", [_payment_owed_for(event)])
    work.on_commit(payment_steps_nudge_on_commit)


def _payment_owed_for(event: EventEnvelope) -> Payment:
    payload = event.payload
    return Payment(
        order_id=payload["order_id"],
        status=PaymentStatus.REQUESTING,
        amount=Decimal(payload["total"]),
        currency=payload["currency"],
        email=payload["email"],
        next_attempt_at=timezone.now(),
    )


def payment_stop_for_cancelled_order(event: EventEnvelope) -> None:
    """order.cancelled: a payment still in flight is owed a cancel at the provider; any
    other payment (failed, succeeded, ...) has nothing left to stop.

    The order's row lock is held (order_cancel): webhooks and saga steps, which lock the
    order first, cannot move the payment meanwhile; the conditional update says so anyway.
    """
    payment = Payment.objects.filter(
        order_id=event.payload["order_id"], status__in=IN_FLIGHT
    ).first()
    if payment is not None and payment_transition(
        payment=payment,
        to=PaymentStatus.CANCEL_REQUESTED,
        next_attempt_at=timezone.now(),
        attempts=0,
    ):
        payment_steps_nudge_on_commit()
