"""Wake the saga's step runner after a commit that left work for it (a hint only: beat
runs it every second anyway), without ever failing the committing request."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)


def payment_steps_nudge_on_commit() -> None:
    if settings.PAYMENT_NUDGE_ON_COMMIT:
        transaction.on_commit(_nudge)


def _nudge() -> None:
    from payments.tasks import run_payment_steps

    try:
        run_payment_steps.apply_async(retry=False, expires=10)
    except Exception as exc:
        logger.warning("could not nudge the payment saga", extra={"error": type(exc).__name__})
