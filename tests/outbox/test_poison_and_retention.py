"""Dead letters and retention (SPEC §4): a poison event goes dead at once and holds back
only its own aggregate; the admin retry action republishes it under the same id, and the
events it held back follow in order. Retention purges only old published rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from outbox.models import OutboxEvent, OutboxStatus
from outbox.relay import relay_until_idle
from outbox.services import outbox_purge_published
from outbox.tasks import purge_published_outbox_events
from tests.outbox.helpers import (
    assert_versions_ascending,
    enqueue,
    new_aggregate_ids,
    stream_entries,
)


@pytest.fixture
def staff_browser() -> Client:
    user = get_user_model().objects.create_superuser("outbox-admin", "a@example.com", "pw")
    browser = Client()
    browser.force_login(user)
    return browser


@pytest.mark.django_db(transaction=True)
def test_a_poison_event_goes_dead_blocks_only_its_aggregate_and_admin_retry_republishes_it(
    settings, staff_browser
):
    # given an event too big to publish, a later event of its aggregate, and another aggregate
    settings.OUTBOX_MAX_EVENT_BYTES = 2_000
    poisoned, healthy = new_aggregate_ids(2)
    [big] = enqueue(aggregate_ids=[poisoned], versions=[1], payload={"blob": "x" * 5_000})
    [held_back] = enqueue(aggregate_ids=[poisoned], versions=[2])
    others = enqueue(aggregate_ids=[healthy], versions=[1, 2])

    # when the relay runs (twice: nothing changes on the second run)
    first = relay_until_idle()
    relay_until_idle()

    # then the poison event is dead after one attempt, with the reason
    big.refresh_from_db()
    assert (big.status, big.attempts) == (OutboxStatus.DEAD, 1)
    assert "OUTBOX_MAX_EVENT_BYTES" in big.last_error
    assert first.dead == 1
    # and only its own aggregate waits: the later version untried, the other aggregate out
    held_back.refresh_from_db()
    assert (held_back.status, held_back.attempts) == (OutboxStatus.PENDING, 0)
    assert {e.status for e in OutboxEvent.objects.filter(aggregate_id=healthy)} == {"published"}
    assert [e["id"] for e in stream_entries()] == [str(e.pk) for e in others]

    # when the limit is raised and staff retry it from the admin changelist
    settings.OUTBOX_MAX_EVENT_BYTES = 256 * 1024
    response = staff_browser.post(
        reverse("admin:outbox_outboxevent_changelist"),
        {"action": "retry_events", "_selected_action": [str(big.pk)]},
        follow=True,
    )
    assert response.status_code == 200
    assert "1 event(s) queued for another attempt" in response.content.decode()
    big.refresh_from_db()
    assert (big.status, big.attempts) == (OutboxStatus.PENDING, 0)
    assert LogEntry.objects.filter(object_id=str(big.pk), change_message__startswith="Retried")
    relay_until_idle()

    # then it is published under the same id, and the held-back version follows in order
    entries = [e for e in stream_entries() if e["aggregate_id"] == poisoned]
    assert [(e["id"], e["version"]) for e in entries] == [
        (str(big.pk), "1"),
        (str(held_back.pk), "2"),
    ]
    assert_versions_ascending(stream_entries())
    assert set(OutboxEvent.objects.values_list("status", flat=True)) == {"published"}


@pytest.mark.django_db(transaction=True)
def test_admin_discard_lets_the_held_back_events_go(settings, staff_browser):
    # given a dead event holding back a later version of its aggregate
    settings.OUTBOX_MAX_EVENT_BYTES = 2_000
    [aggregate] = new_aggregate_ids(1)
    [big] = enqueue(aggregate_ids=[aggregate], versions=[1], payload={"blob": "x" * 5_000})
    [later] = enqueue(aggregate_ids=[aggregate], versions=[2])
    relay_until_idle()
    # when staff discard it
    staff_browser.post(
        reverse("admin:outbox_outboxevent_changelist"),
        {"action": "discard_events", "_selected_action": [str(big.pk)]},
    )
    relay_until_idle()
    # then it stays (discarded, never published) and the later version is delivered
    big.refresh_from_db()
    later.refresh_from_db()
    assert (big.status, later.status) == (OutboxStatus.DISCARDED, OutboxStatus.PUBLISHED)
    assert [e["id"] for e in stream_entries()] == [str(later.pk)]


@pytest.mark.django_db
def test_retention_purges_only_published_rows_older_than_the_retention(settings):
    # given published rows on both sides of the cutoff, and old pending/dead/discarded rows
    settings.OUTBOX_RETENTION = 3600
    now = timezone.now()
    rows = enqueue(aggregate_ids=new_aggregate_ids(12), versions=[1])
    old_published, recent, pending, dead, discarded = rows[:7], rows[7], rows[8], rows[9], rows[10]
    just_inside = rows[11]
    two_hours_ago = now - timedelta(hours=2)
    OutboxEvent.objects.filter(pk__in=[r.pk for r in old_published]).update(
        status=OutboxStatus.PUBLISHED, published_at=two_hours_ago, created_at=two_hours_ago
    )
    OutboxEvent.objects.filter(pk=recent.pk).update(
        status=OutboxStatus.PUBLISHED, published_at=now - timedelta(minutes=5)
    )
    OutboxEvent.objects.filter(pk=just_inside.pk).update(
        status=OutboxStatus.PUBLISHED, published_at=now - timedelta(seconds=3500)
    )
    OutboxEvent.objects.filter(pk=pending.pk).update(created_at=now - timedelta(days=30))
    OutboxEvent.objects.filter(pk=dead.pk).update(
        status=OutboxStatus.DEAD, created_at=now - timedelta(days=30)
    )
    OutboxEvent.objects.filter(pk=discarded.pk).update(
        status=OutboxStatus.DISCARDED, created_at=now - timedelta(days=30)
    )

    # when the purge runs in small batches, and then the beat task runs too
    deleted = outbox_purge_published(older_than=timedelta(seconds=3600), batch_size=3)
    again = purge_published_outbox_events.apply().get()

    # then only the old published rows are gone
    assert (deleted, again) == (7, 0)
    assert set(OutboxEvent.objects.values_list("pk", flat=True)) == {
        recent.pk,
        just_inside.pk,
        pending.pk,
        dead.pk,
        discarded.pk,
    }


@pytest.mark.django_db
def test_the_purge_task_uses_outbox_retention(settings):
    # given a row published 10 minutes ago
    [row] = enqueue(aggregate_ids=new_aggregate_ids(1), versions=[1])
    OutboxEvent.objects.filter(pk=row.pk).update(
        status=OutboxStatus.PUBLISHED, published_at=timezone.now() - timedelta(minutes=10)
    )
    # when the task runs with the default retention (7 days), then with 5 minutes
    kept = purge_published_outbox_events.apply().get()
    settings.OUTBOX_RETENTION = 300
    purged = purge_published_outbox_events.apply().get()
    # then only the second run purges it
    assert (kept, purged) == (0, 1)
    assert not OutboxEvent.objects.exists()
