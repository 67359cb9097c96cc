"""Wake the saga's step runner after a commit that left work for it."""

from __future__ import annotations

from django.conf import settings

from core.nudge import nudge_on_commit

STEPS_TASK = "payments.tasks.run_payment_steps"


def payment_steps_nudge_on_commit() -> None:
    if settings.PAYMENT_NUDGE_ON_COMMIT:
        nudge_on_commit(STEPS_TASK)
