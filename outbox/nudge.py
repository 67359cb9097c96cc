"""Wake the relay right after a commit, so events do not wait for the next beat tick.

The relay covers its nudges (core/nudge.py): a run keeps polling while it finds work and
for OUTBOX_RELAY_LINGER seconds after, holding the nudge flag meanwhile, so web processes
that find the flag send nothing until its deadline."""

from __future__ import annotations

from django.conf import settings

from core.nudge import nudge_on_commit

RELAY_TASK = "outbox.tasks.relay_outbox"


def relay_nudge_on_commit() -> None:
    if settings.OUTBOX_NUDGE_ON_COMMIT:
        nudge_on_commit(RELAY_TASK, quiet=settings.OUTBOX_RELAY_LINGER, covered=True)
