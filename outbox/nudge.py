"""Wake the relay right after a commit, so events do not wait for the next beat tick."""

from __future__ import annotations

from django.conf import settings

from core.nudge import nudge_on_commit

RELAY_TASK = "outbox.tasks.relay_outbox"


def relay_nudge_on_commit() -> None:
    if settings.OUTBOX_NUDGE_ON_COMMIT:
        nudge_on_commit(RELAY_TASK)
