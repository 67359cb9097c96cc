"""In-transaction subscribers: how another app reacts to an event inside the emitter's own
transaction, without the emitter importing it (orders never imports payments).

This is a seam of its own, apart from the durable outbox: writing an event row
(`outbox_enqueue`) dispatches nothing. The emitting service calls `dispatch_in_transaction`
at the call site, visibly, right after enqueueing the event, so a reader of the service sees
that other apps' code runs there, under the locks the service holds.

A subscriber writes rows only (network calls happen later, in tasks driven by those rows),
so whatever it records commits or rolls back with the change itself.

A change sent as one unit of work (core.unit_of_work: order creation's one round trip) has
no open transaction to run ORM writes in: a subscriber that can serve such a change
registers a second form, `in_unit_of_work(event, work)`, which adds its rows to the work.
Dispatching into a unit of work refuses an event that has a subscriber without that form,
so no reaction is ever skipped silently.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.db import transaction

from core.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from outbox.services import EventEnvelope

InTransaction = Callable[["EventEnvelope"], None]
InUnitOfWork = Callable[["EventEnvelope", UnitOfWork], None]

_subscribers: dict[str, list[InTransaction]] = defaultdict(list)
_unit_of_work_forms: dict[InTransaction, InUnitOfWork] = {}


def subscribe_in_transaction(
    event_type: str, handler: InTransaction, *, in_unit_of_work: InUnitOfWork | None = None
) -> None:
    """Run `handler(event)` inside the transaction of every `event_type` event, or
    `in_unit_of_work(event, work)` when the change is a unit of work (register from an
    AppConfig.ready())."""
    if handler not in _subscribers[event_type]:
        _subscribers[event_type].append(handler)
    if in_unit_of_work is not None:
        _unit_of_work_forms[handler] = in_unit_of_work


def dispatch_in_transaction(*, event: EventEnvelope) -> None:
    """Run the subscribers of `event.type`. Precondition: inside the emitter's atomic()."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("dispatch_in_transaction must run inside the emitter's transaction")
    for handler in _subscribers.get(event.type, ()):
        handler(event)


def dispatch_in_unit_of_work(*, event: EventEnvelope, work: UnitOfWork) -> None:
    """Let the subscribers of `event.type` add their rows to `work`.

    Raises RuntimeError, before any subscriber runs, if one of them has no unit-of-work form.
    """
    handlers = _subscribers.get(event.type, ())
    missing = [handler for handler in handlers if handler not in _unit_of_work_forms]
    if missing:
        raise RuntimeError(f"{event.type} subscribers without a unit-of-work form: {missing}")
    for handler in handlers:
        _unit_of_work_forms[handler](event, work)
