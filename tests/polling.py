"""Polling with a deadline, for tests that wait on other processes (Celery, gunicorn, the
fake provider) to bring the database or the event stream to a state."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any


def eventually(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    alive: Sequence = (),
) -> Any:
    """Poll until predicate() is truthy and return it; fail naming `what` at the deadline,
    or at once when one of the `alive` processes died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for process in alive:
            assert process.is_running(), f"{process.name} died while waiting for {what}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not true within {timeout:.0f}s (last: {value!r})")
        time.sleep(interval)
