"""Threads released at once and waited for without a fixed window, for the tests that race
requests against each other (webhook redeliveries, rate limits, stock).

`threading.Barrier(n).wait(timeout=10)` in each thread and `thread.join(60)` encode how fast
the machine was when someone wrote them: on a busy runner, 24 threads may take more than
10 s to all reach the barrier, which then breaks and the test fails without having raced
anything. Here the main thread waits for the threads to arrive, and later to finish, with
tests.polling.eventually (a window scaled by the machine's slowness and extended while
the count of arrived or finished threads moves), then releases them all at once:

    start = StartLine(len(threads))
    # in each thread: start.wait(); ...work...
    start.release(what="24 guessing threads at the start line")
    wait_threads(threads, what="the guesses", progress=lambda: len(statuses))
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from tests.polling import eventually, threads_finished


class StartLine:
    """A barrier of `parties` threads that the main thread opens once all of them wait."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        # One more party: the main thread, whose own wait() opens the barrier.
        self._barrier = threading.Barrier(parties + 1)

    def wait(self) -> None:
        """In each thread: block until released (BrokenBarrierError if release() gave up)."""
        self._barrier.wait()

    def release(self, *, what: str, timeout: float = 10.0) -> None:
        """In the main thread: wait until every party waits, then let them all go together.

        Fails naming `what` when they do not all arrive (one window without a new arrival);
        the waiting threads are then let go with BrokenBarrierError, so none is left hanging.
        """
        try:
            eventually(
                lambda: self._barrier.n_waiting >= self.parties,
                timeout=timeout,
                what=what,
                progress=lambda: self._barrier.n_waiting,
                interval=0.01,
            )
        except BaseException:
            self._barrier.abort()
            raise
        self._barrier.wait()


def wait_threads(
    threads: Sequence[threading.Thread],
    *,
    what: str,
    progress: Callable[[], Any] | None = None,
    timeout: float = 30.0,
) -> None:
    """Wait until every thread has ended. `timeout` is a quiet machine's window without
    progress, scaled by the machine's slowness; progress is a thread ending, or a change of
    `progress()` (e.g. the count of results recorded so far)."""

    def measure() -> tuple:
        done = sum(not thread.is_alive() for thread in threads)
        return (done, progress() if progress else None)

    eventually(threads_finished(threads), timeout=timeout, what=what, progress=measure)
