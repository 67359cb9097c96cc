"""Celery entry points of the payment saga: call a service, nothing else."""

from celery import shared_task

from core.nudge import nudge_clear
from payments.nudge import STEPS_TASK
from payments.steps import payment_steps_run_until_idle
from payments.webhooks import webhook_retry_waiting


# Steps are idempotent (leases, provider idempotency keys), so acks_late is safe; the hard
# time limit stays below the step lease so a killed run's rows are re-claimed, not doubled.
@shared_task(acks_late=True, soft_time_limit=20, time_limit=25, ignore_result=True)
def run_payment_steps() -> int:
    nudge_clear(STEPS_TASK)
    return payment_steps_run_until_idle()


@shared_task(acks_late=True, ignore_result=True)
def retry_waiting_webhooks() -> int:
    return webhook_retry_waiting()
