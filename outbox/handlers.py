"""In-transaction subscribers: how other apps react to an event without its emitter
importing them (SPEC/STYLE: orders never imports payments).

A handler runs inside the transaction that writes the event, so whatever it records (for
example "ask the provider for a payment") commits or rolls back with the change itself.
Handlers write rows only: network calls happen later, in tasks driven by those rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

_handlers: dict[str, list[Callable]] = defaultdict(list)


def outbox_subscribe(event_type: str, handler: Callable) -> None:
    """Register `handler(event)` for `event_type` (call from an AppConfig.ready())."""
    if handler not in _handlers[event_type]:
        _handlers[event_type].append(handler)


def outbox_dispatch(event) -> None:
    for handler in _handlers.get(event.type, ()):
        handler(event)
