"""Wake the relay right after a commit, so events do not wait for the next beat tick.

The nudge is only a hint (beat runs the relay every OUTBOX_RELAY_INTERVAL anyway), so it
is debounced per process and never allowed to fail or slow the request that committed.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_last_nudge = 0.0
_quiet_until = 0.0  # after a failed nudge (broker down), stay quiet for a while


def relay_nudge_on_commit() -> None:
    if settings.OUTBOX_NUDGE_ON_COMMIT:
        transaction.on_commit(_nudge)


def _nudge() -> None:
    global _last_nudge, _quiet_until
    now = time.monotonic()
    with _lock:
        if now < _quiet_until or now - _last_nudge < settings.OUTBOX_NUDGE_MIN_INTERVAL:
            return
        _last_nudge = now
    from outbox.tasks import relay_outbox  # the task module imports Celery machinery

    try:
        relay_outbox.apply_async(retry=False, expires=settings.OUTBOX_RELAY_INTERVAL * 5)
    except Exception as exc:
        with _lock:
            _quiet_until = time.monotonic() + 5.0
        logger.warning("could not nudge the outbox relay", extra={"error": type(exc).__name__})
