"""Celery entry points of the outbox: relay and retention."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from core.nudge import nudge_clear
from outbox.nudge import RELAY_TASK
from outbox.relay import relay_until_idle
from outbox.services import outbox_purge_published


# Idempotent (leases + dedupe), so acks_late; the hard limit is shorter than the lease so
# a killed run's rows are re-claimable soon after, never while it could still write.
@shared_task(acks_late=True, soft_time_limit=20, time_limit=25, ignore_result=True)
def relay_outbox() -> dict:
    nudge_clear(RELAY_TASK)
    report = relay_until_idle()
    return {"published": report.published, "dead": report.dead, "paused": report.paused}


@shared_task(acks_late=True, ignore_result=True)
def purge_published_outbox_events() -> int:
    return outbox_purge_published(older_than=timedelta(seconds=settings.OUTBOX_RETENTION))
