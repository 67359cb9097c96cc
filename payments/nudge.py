"""Wake the saga's step runner after a commit that left work for it."""

from __future__ import annotations

from django.conf import settings

from core.nudge import nudge_on_commit

STEPS_TASK = "payments.tasks.run_payment_steps"
# Beat runs the step runner every second anyway; a nudge only shortens that wait. A
# process asks for the runner's flag by itself at most every 2 s; a commit that asks Redis
# about the relay (an order's commit nudges both) takes this flag in the same round trip
# once 200 ms have passed, so the steps ride on the relay's nudges and cost no round trip
# of their own (core/nudge.py).
STEPS_NUDGE_QUIET = 2.0


def payment_steps_nudge_on_commit() -> None:
    if settings.PAYMENT_NUDGE_ON_COMMIT:
        nudge_on_commit(STEPS_TASK, quiet=STEPS_NUDGE_QUIET)
