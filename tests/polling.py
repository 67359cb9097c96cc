"""Polling with a deadline, for tests that wait on other processes (Celery, gunicorn, the
fake provider) to bring the database or the event stream to a state.

The deadline is never a fixed window (scripts/waiting.py): `timeout` is what a quiet
machine needs with a margin, scaled by how slow this machine is right now, and extended
while `progress` (e.g. a count of published rows) keeps changing or while the `alive`
processes keep using CPU or writing their logs."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from scripts.processes import ManagedProcess, group_cpu_seconds
from scripts.waiting import slowness as slowness
from scripts.waiting import wait_for


def processes_progress(processes: Sequence) -> Callable[[], tuple]:
    """A progress measure of running processes: the CPU time their process groups used and
    the size of their logs (ManagedProcess), to 10 ms and to the byte."""

    def measure() -> tuple:
        readings = []
        for process in processes:
            if isinstance(process, ManagedProcess) and process.popen is not None:
                readings.append((round(group_cpu_seconds(process.pid), 2), process.log_size()))
        return tuple(readings)

    return measure


def eventually(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    alive: Sequence = (),
    progress: Callable[[], Any] | None = None,
    ceiling: float = 5.0,
) -> Any:
    """Poll until predicate() is truthy and return it; fail naming `what` at the deadline
    (`timeout` scaled by the machine's slowness, extended while `progress` changes), or at
    once when one of the `alive` processes died meanwhile.

    Without `progress`, the `alive` processes' CPU time and log size are the progress
    measure: a worker that is busy (however slowly) is waited for, an idle one is not for
    long. Give `progress` whenever the awaited state has a count that moves."""

    def check() -> None:
        for process in alive:
            assert process.is_running(), f"{process.name} died while waiting for {what}"

    if progress is None and alive:
        progress = processes_progress(alive)
    return wait_for(
        predicate,
        what=what,
        timeout=timeout,
        progress=progress,
        interval=interval,
        ceiling=ceiling,
        check=check,
    )


def stays_false(
    predicate: Callable[[], Any], *, window: float, what: str, interval: float = 0.05
) -> None:
    """Fail naming `what` as soon as predicate() is truthy within `window` seconds, scaled
    by the machine's slowness: a check that something does NOT happen gives it as long to
    happen on a busy machine as on a quiet one."""
    scaled = window * slowness()
    deadline = time.monotonic() + scaled
    while True:
        value = predicate()
        assert not value, f"{what} (within {scaled:.1f}s: {value!r})"
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def threads_finished(threads: Sequence) -> Callable[[], bool]:
    """A predicate for eventually(): every one of these threads has ended."""
    return lambda: not any(thread.is_alive() for thread in threads)
