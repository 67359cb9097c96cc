"""Wake a Celery task right after a commit that left work for it.

A nudge is only a hint: beat runs the same task every second or so, and the task works
from database rows. So a nudge must never fail or slow the request that committed, and it
must not flood the queue: under load every commit would otherwise queue a task, the queue
would outgrow the workers, and (with task expiry) the relay would starve. Hence:

- at most one nudge per task waits in the queue, across all processes: a Redis flag taken
  with SET NX PX before sending, cleared by the task when it starts (`nudge_clear`), and
  expiring by itself should the message be lost;
- per process, a failed send (broker down) opens a breaker that silences nudges for a few
  seconds;
- a commit's nudges (relay, payment steps) take their flags in one pipelined round trip;
- per process, nudges are debounced: within `_DEBOUNCE_MS` of this process's last nudge of
  a task, a commit skips even the flag's round trip, so a burst of commits costs one. The
  window is shorter than the flag's TTL, so while it lasts the flag is either still set (a
  nudge is queued anyway) or was cleared by a task that had started; work committed after
  such a start waits at most until the next nudge after the window or the next beat tick.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import current_app
from django.conf import settings
from django.db import transaction
from django_redis import get_redis_connection

from core.breaker import Breaker

logger = logging.getLogger(__name__)

_FLAG_TTL_MS = 2000
_DEBOUNCE_MS = 200  # <= _FLAG_TTL_MS
_DEBOUNCE = _DEBOUNCE_MS / 1000
# task name -> when (time.monotonic()) this process last asked for the flag.
_last_nudged: dict[str, float] = {}


class _PendingTasks(threading.local):
    def __init__(self) -> None:
        self.tasks: set[str] = set()


_pending = _PendingTasks()
_QUIET_AFTER_FAILURE_SECONDS = 5.0
broker_breaker = Breaker(cooldown=lambda: _QUIET_AFTER_FAILURE_SECONDS)


def _flag_key(task_name: str) -> str:
    return f"{settings.CELERY_TASK_DEFAULT_QUEUE}:nudge:{task_name}"


def nudge_on_commit(task_name: str) -> None:
    """Send `task_name` once the current transaction commits (at most one queued).

    The tasks a commit nudges take their flags in one round trip: each call adds its task
    to this thread's pending set, and the first callback after the commit takes them all
    (a task left pending by a rolled-back transaction goes with the next commit: a spare
    hint, harmless)."""
    _pending.tasks.add(task_name)
    transaction.on_commit(_nudge_pending)


def nudge_clear(task_name: str) -> None:
    """Called by the task as it starts: commits from now on may queue a new nudge."""
    try:
        get_redis_connection("default").delete(_flag_key(task_name))
    except Exception:  # the flag expires by itself
        logger.debug("could not clear nudge flag", exc_info=True)


def _nudge_pending() -> None:
    tasks = _pending.tasks
    if not tasks or broker_breaker.is_open:
        return
    _pending.tasks = set()
    now = time.monotonic()
    # Skip a task this process nudged a moment ago: one round trip per burst.
    due = sorted(t for t in tasks if now - _last_nudged.get(t, float("-inf")) >= _DEBOUNCE)
    if not due:
        return
    for task_name in due:
        _last_nudged[task_name] = now
    try:
        flags = get_redis_connection("default").pipeline(transaction=False)
        for task_name in due:
            flags.set(_flag_key(task_name), "1", nx=True, px=_FLAG_TTL_MS)
        won = [task for task, taken in zip(due, flags.execute(), strict=True) if taken]
        # (a task whose flag is taken already has a nudge waiting in the queue)
        for task_name in won:
            # The process's Celery app (the wiring makes it current on import), by name:
            # the ground floor never imports the wiring.
            current_app.send_task(task_name, retry=False, expires=10)
    except Exception as exc:
        broker_breaker.trip()
        logger.warning("could not nudge tasks", extra={"tasks": due, "error": type(exc).__name__})
