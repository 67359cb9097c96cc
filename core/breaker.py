"""One process-local circuit breaker, for every dependency a process should stop hammering
while it is down (the event stream's Redis, the Celery broker, the rate limiter's Redis).

Open after a failure, for `cooldown` seconds: callers skip the dependency meanwhile. When
the cooldown is over the breaker is half-open (`tripped` and not `is_open`): the next call
is a probe, and the caller closes the breaker (`reset`) on success or trips it again.
Process-local on purpose: each process learns of an outage by itself, at the cost of one
failed call, and shares no state that could itself be unreachable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Breaker:
    def __init__(
        self,
        *,
        cooldown: Callable[[], float],
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        """`cooldown` is read at every trip (settings may change it); `on_change(open)` is
        called on every trip and reset, e.g. to set a gauge."""
        self._cooldown = cooldown
        self._on_change = on_change
        self._lock = threading.Lock()
        self.open_until = 0.0

    @property
    def is_open(self) -> bool:
        """Whether callers should skip the dependency now."""
        return time.monotonic() < self.open_until

    @property
    def tripped(self) -> bool:
        """Whether the last outcome was a failure (open, or half-open once cooled down)."""
        return self.open_until > 0

    def trip(self) -> None:
        with self._lock:
            self.open_until = time.monotonic() + self._cooldown()
        if self._on_change is not None:
            self._on_change(True)

    def reset(self) -> bool:
        """Close the breaker; returns whether it had been tripped (the dependency is back)."""
        with self._lock:
            was_tripped, self.open_until = self.open_until > 0, 0.0
        if self._on_change is not None:
            self._on_change(False)
        return was_tripped
