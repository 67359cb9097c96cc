"""Celery entry points of the outbox: relay and retention."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from outbox.relay import relay_in_background
from outbox.services import outbox_purge_published


# Beat's tick and the nudges: the relay runs in a thread of this worker process (see
# outbox/relay.py) and the task returns at once. Idempotent (leases + dedupe).
@shared_task(acks_late=True, ignore_result=True)
def relay_outbox() -> dict:
    return {"started": relay_in_background()}


@shared_task(acks_late=True, ignore_result=True)
def purge_published_outbox_events() -> int:
    return outbox_purge_published(older_than=timedelta(seconds=settings.OUTBOX_RETENTION))
