"""In-transaction subscribers: how another app reacts to an event inside the emitter's own
transaction, without the emitter importing it (orders never imports payments).

This is a seam of its own, apart from the durable outbox: writing an event row
(`outbox_enqueue`) dispatches nothing. The emitting service calls `dispatch_in_transaction`
at the call site, visibly, right after enqueueing the event, so a reader of the service sees
that other apps' code runs there, under the locks the service holds.

A subscriber writes rows only (network calls happen later, in tasks driven by those rows),
so whatever it records commits or rolls back with the change itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.db import transaction

if TYPE_CHECKING:
    from outbox.services import EventEnvelope

_subscribers: dict[str, list[Callable[[EventEnvelope], None]]] = defaultdict(list)


def subscribe_in_transaction(event_type: str, handler: Callable[[EventEnvelope], None]) -> None:
    """Run `handler(event)` inside the transaction of every `event_type` event (register
    from an AppConfig.ready())."""
    if handler not in _subscribers[event_type]:
        _subscribers[event_type].append(handler)


def dispatch_in_transaction(*, event: EventEnvelope) -> None:
    """Run the subscribers of `event.type`. Precondition: inside the emitter's atomic()."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("dispatch_in_transaction must run inside the emitter's transaction")
    for handler in _subscribers.get(event.type, ()):
        handler(event)
