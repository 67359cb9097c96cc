"""The transactional outbox: one row per event, written in the same transaction as the
state change it describes, then relayed to the event stream (see outbox/relay.py)."""

from __future__ import annotations

import uuid

from django.db import models


class OutboxStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PUBLISHED = "published", "Published"
    DEAD = "dead", "Dead letter"
    # Given up on by staff: never published, and no longer holds back its aggregate.
    DISCARDED = "discarded", "Discarded"


class OutboxEvent(models.Model):
    # The event id: consumers deduplicate on it, so a retry keeps it.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=100)
    # The version of the type's published schema (the emitting app's event_schemas/) the
    # payload follows, fixed when the row is written: a row written before a new version
    # shipped is still published as the version it was written in. The database default,
    # 1, is what rows written before the column existed (and writers of that time) follow.
    schema_version = models.SmallIntegerField(default=1, db_default=1)
    aggregate_type = models.CharField(max_length=50)
    aggregate_id = models.CharField(max_length=64)
    # 1, 2, 3... per aggregate, assigned under the aggregate's row lock.
    version = models.PositiveIntegerField()
    occurred_at = models.DateTimeField()
    correlation_id = models.CharField(max_length=128, blank=True, default="")
    payload = models.JSONField()

    status = models.CharField(
        max_length=16, choices=OutboxStatus.choices, default=OutboxStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    # When the relay may try it next (backoff lives here, not in Celery ETAs).
    next_attempt_at = models.DateTimeField()
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    published_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        verbose_name = "outbox event"
        constraints = [
            models.UniqueConstraint(
                fields=["aggregate_type", "aggregate_id", "version"],
                name="outbox_unique_aggregate_version",
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="outbox_pending_due_idx",
                condition=models.Q(status="pending"),
            ),
            # The admin's list, newest first (the unique constraint's index serves the
            # per-aggregate lookups and the aggregate_type filter).
            models.Index(fields=["created_at", "id"], name="outbox_created_id_idx"),
            models.Index(fields=["status", "published_at"], name="outbox_status_published_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.aggregate_type}:{self.aggregate_id} v{self.version}"
