"""Celery entry points of the payment saga: call a service, nothing else."""

import time

from celery import shared_task
from django.conf import settings

from core.nudge import nudge_clear
from payments.nudge import STEPS_TASK
from payments.services import payment_steps_run, webhook_retry_waiting


# Steps are idempotent (leases, provider idempotency keys), so acks_late is safe; the hard
# time limit stays below the step lease so a killed run's rows are re-claimed, not doubled.
@shared_task(acks_late=True, soft_time_limit=20, time_limit=25, ignore_result=True)
def run_payment_steps() -> int:
    nudge_clear(STEPS_TASK)
    total, deadline = 0, time.monotonic() + settings.PAYMENT_STEPS_TIME_BUDGET
    while time.monotonic() < deadline:
        report = payment_steps_run()
        total += report.claimed
        if report.claimed == 0:
            break
    return total


@shared_task(acks_late=True, ignore_result=True)
def retry_waiting_webhooks() -> int:
    return webhook_retry_waiting()
