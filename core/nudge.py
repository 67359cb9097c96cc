"""Wake a Celery task right after a commit that left work for it.

A nudge is only a hint: beat runs the same task every second or so, and the task works
from database rows. So a nudge must never fail or slow the request that committed, and it
must not flood the queue: under load every commit would otherwise queue a task, the queue
would outgrow the workers, and (with task expiry) the relay would starve. Hence:

- at most one nudge per task waits in the queue, across all processes: a Redis flag taken
  with SET NX PX before sending, cleared by the task when it starts (`nudge_clear`), and
  expiring by itself should the message be lost;
- per process, a failed send (broker down) opens a breaker that silences nudges for a few
  seconds.
"""

from __future__ import annotations

import logging
from functools import partial

from celery import current_app
from django.conf import settings
from django.db import transaction
from django_redis import get_redis_connection

from core.breaker import Breaker

logger = logging.getLogger(__name__)

_FLAG_TTL_MS = 2000
_QUIET_AFTER_FAILURE_SECONDS = 5.0
broker_breaker = Breaker(cooldown=lambda: _QUIET_AFTER_FAILURE_SECONDS)


def _flag_key(task_name: str) -> str:
    return f"{settings.CELERY_TASK_DEFAULT_QUEUE}:nudge:{task_name}"


def nudge_on_commit(task_name: str) -> None:
    """Send `task_name` once the current transaction commits (at most one queued)."""
    transaction.on_commit(partial(_nudge, task_name))


def nudge_clear(task_name: str) -> None:
    """Called by the task as it starts: commits from now on may queue a new nudge."""
    try:
        get_redis_connection("default").delete(_flag_key(task_name))
    except Exception:  # the flag expires by itself
        logger.debug("could not clear nudge flag", exc_info=True)


def _nudge(task_name: str) -> None:
    if broker_breaker.is_open:
        return
    try:
        if not get_redis_connection("default").set(
            _flag_key(task_name), "1", nx=True, px=_FLAG_TTL_MS
        ):
            return  # one is already waiting in the queue
        # The process's Celery app (the wiring makes it current on import), by name: the
        # ground floor never imports the wiring.
        current_app.send_task(task_name, retry=False, expires=10)
    except Exception as exc:
        broker_breaker.trip()
        logger.warning(
            "could not nudge a task", extra={"task": task_name, "error": type(exc).__name__}
        )
