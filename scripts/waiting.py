"""Waiting for an event with a deadline that grows with the machine's measured pace, for
tests, drills and benchmarks that wait on other processes.

A fixed window (`time.monotonic() + 30`) encodes how fast the machine was when someone
wrote it: on a CI runner that is twice as slow, or that shares its cores with other jobs,
it runs out while the awaited thing is still on its way. Here a wait has a base window
(what a quiet developer machine needs, with a margin) that is

- scaled by how slow this machine is right now (`slowness()`: how much longer than its own
  CPU time a short busy loop takes here, i.e. how many runnable threads share each core,
  or the load average per core if that is higher), measured when the wait starts and
  again before it gives up;
- extended by a whole window each time a progress measure given by the caller changes
  (rows counted, bytes of log written, CPU seconds used by the awaited processes, a lock's
  remaining lifetime): a slow system that visibly gets somewhere is never cut off, a stuck
  one fails one window after its last progress;
- capped at `ceiling` windows in all, so that something busy that never gets where it
  should still fails.

What is asserted never changes: only how long the wait may take.

Only the standard library, like scripts/servers.py and scripts/processes.py, so benchmarks
can use it before Django is set up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_SLOWNESS", "Waiting", "slowness", "wait_for"]

#: Slowness is clipped here: beyond it the machine is broken, not slow.
MAX_SLOWNESS = 8.0
_CALIBRATION_CPU_SECONDS = 0.02


def slowness() -> float:
    """How many times slower than a quiet machine this one runs right now (1.0 or more).

    A busy loop of 20 ms of this thread's CPU time takes 20 ms of wall time on an idle
    core, and N times that when N runnable threads share the core; the 1-minute load
    average per core catches what a 20 ms sample misses."""
    wall_start = time.perf_counter()
    cpu_start = time.thread_time()
    while time.thread_time() - cpu_start < _CALIBRATION_CPU_SECONDS:
        pass
    share = (time.perf_counter() - wall_start) / _CALIBRATION_CPU_SECONDS
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    load = os.getloadavg()[0] / cores
    return min(MAX_SLOWNESS, max(1.0, share, load))


class Waiting:
    """The deadline of one wait: a base window scaled by slowness(), pushed back by a window
    whenever progress is seen, never beyond `ceiling` windows from the start."""

    def __init__(self, window: float, *, ceiling: float = 5.0) -> None:
        self.window = window
        self.ceiling = ceiling
        self.started = time.monotonic()
        self.factor = slowness()
        self.last_progress = self.started
        self.progress_seen = 0

    @property
    def scaled(self) -> float:
        return self.window * self.factor

    @property
    def deadline(self) -> float:
        cap = self.started + self.ceiling * self.scaled
        return min(cap, self.last_progress + self.scaled)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def progressed(self) -> None:
        self.last_progress = time.monotonic()
        self.progress_seen += 1

    def expired(self) -> bool:
        """True once the deadline passed, measuring the machine's slowness again first (a
        machine that got busier meanwhile gets the longer window it now needs)."""
        if time.monotonic() < self.deadline:
            return False
        self.factor = max(self.factor, slowness())
        return time.monotonic() >= self.deadline

    def describe(self) -> str:
        capped = time.monotonic() >= self.started + self.ceiling * self.scaled
        why = (
            f"the ceiling of {self.ceiling:g} windows reached"
            if capped
            else f"no progress for {self.scaled:.0f}s"
        )
        return (
            f"{self.elapsed:.0f}s waited ({why}; window {self.window:g}s x slowness "
            f"{self.factor:.1f}, progress seen {self.progress_seen} times)"
        )


def _measure(progress: Callable[[], Any]) -> Any:
    try:
        return progress()
    except Exception as exc:  # e.g. the server being measured is restarting: no reading
        return f"unreadable: {type(exc).__name__}"


def wait_for(
    predicate: Callable[[], Any],
    *,
    what: str,
    timeout: float,
    progress: Callable[[], Any] | None = None,
    interval: float = 0.1,
    ceiling: float = 5.0,
    check: Callable[[], None] | None = None,
    error: type[Exception] = AssertionError,
    on_progress: Callable[[Any], None] | None = None,
) -> Any:
    """Poll predicate() until it is truthy and return its value.

    `timeout` is the base window (see the module's docstring): scaled by slowness(), and
    extended while progress() returns something new (any comparable value; an exception
    counts as a reading of its own). `check` runs before each poll and may raise (e.g. a
    process died). At the deadline `error` is raised naming `what`, the last value, the
    last progress reading and how the deadline was reached. `on_progress` is told each new
    progress reading (e.g. to log it)."""
    if check:
        check()
    value = predicate()
    if value:
        return value
    waiting = Waiting(timeout, ceiling=ceiling)
    seen = _measure(progress) if progress else None
    while True:
        time.sleep(interval)
        if check:
            check()
        value = predicate()
        if value:
            return value
        if progress:
            reading = _measure(progress)
            if reading != seen:
                seen = reading
                waiting.progressed()
                if on_progress:
                    on_progress(reading)
        if waiting.expired():
            last = f"; progress {seen!r}" if progress else ""
            raise error(f"{what}: not true after {waiting.describe()} (last: {value!r}{last})")
