"""Payments tables: one payment per order, and the inbox of provider webhooks."""

from __future__ import annotations

import uuid

from django.db import models


class PaymentStatus(models.TextChoices):
    REQUESTING = "requesting", "Requesting at provider"  # we owe the provider a create call
    PENDING = "pending", "Pending at provider"  # created there, outcome not known yet
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCEL_REQUESTED = "cancel_requested", "Cancel requested"  # the order was cancelled
    CANCELLED = "cancelled", "Cancelled"
    REFUND_REQUESTED = "refund_requested", "Refund requested"  # money for a cancelled order
    REFUND_PENDING = "refund_pending", "Refund pending at provider"
    REFUNDED = "refunded", "Refunded"


# The payment's whole state machine (SPEC §5): every status change goes through
# payments.services.payment_transition, which applies only these moves, as a conditional
# UPDATE on the expected status. A payment is created in `requesting`. Nothing leaves
# `refunded`, and nothing reaches `succeeded` after a refund was asked for or made: a
# success that comes after a failure or a cancel asks for the money back instead.
PAYMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    PaymentStatus.REQUESTING: frozenset(
        {
            PaymentStatus.PENDING,  # the provider created it
            PaymentStatus.SUCCEEDED,  # its success webhook beat the create step's answer
            PaymentStatus.FAILED,
            PaymentStatus.CANCEL_REQUESTED,  # the order was cancelled
            PaymentStatus.REFUND_REQUESTED,  # a success for an order cancelled meanwhile
        }
    ),
    PaymentStatus.PENDING: frozenset(
        {
            PaymentStatus.SUCCEEDED,
            PaymentStatus.FAILED,
            PaymentStatus.CANCEL_REQUESTED,
            PaymentStatus.REFUND_REQUESTED,
        }
    ),
    # A refund applies only to a payment that succeeded: reported by the provider (a refund
    # of a paid order), or asked for by the saga (a success for a cancelled order).
    PaymentStatus.SUCCEEDED: frozenset({PaymentStatus.REFUNDED}),
    # Declined, and yet a success came: the money goes back.
    PaymentStatus.FAILED: frozenset({PaymentStatus.REFUND_REQUESTED}),
    PaymentStatus.CANCEL_REQUESTED: frozenset(
        {
            PaymentStatus.CANCELLED,
            PaymentStatus.FAILED,  # declined before the cancel arrived
            PaymentStatus.REFUND_REQUESTED,  # paid before the cancel arrived
        }
    ),
    PaymentStatus.CANCELLED: frozenset({PaymentStatus.REFUND_REQUESTED}),
    PaymentStatus.REFUND_REQUESTED: frozenset(
        {
            PaymentStatus.REFUND_PENDING,
            PaymentStatus.REFUNDED,  # the refund webhook beat the refund step's answer
            PaymentStatus.CANCELLED,  # no money was taken after all
            PaymentStatus.FAILED,
        }
    ),
    PaymentStatus.REFUND_PENDING: frozenset({PaymentStatus.REFUNDED}),
    PaymentStatus.REFUNDED: frozenset(),
}

# Statuses in which the saga still owes the provider a call (worked by payments.tasks).
OUTBOUND_STATUSES = (
    PaymentStatus.REQUESTING,
    PaymentStatus.CANCEL_REQUESTED,
    PaymentStatus.REFUND_REQUESTED,
)


class Payment(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    order = models.OneToOneField(
        "orders.Order", on_delete=models.PROTECT, related_name="+", db_index=True
    )
    status = models.CharField(max_length=32, choices=PaymentStatus.choices)
    provider_payment_id = models.CharField(max_length=100, null=True, blank=True, unique=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    email = models.EmailField(max_length=254)
    # Outbound step bookkeeping: due time, lease of the worker calling the provider, errors.
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    # Versions of this payment's own events (payment.refunded), bumped under its row lock.
    event_version = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="payment_outbound_due_idx",
                condition=models.Q(status__in=[s.value for s in OUTBOUND_STATUSES]),
            ),
            models.Index(fields=["status"], name="payment_status_idx"),
        ]

    def __str__(self) -> str:
        return f"Payment {self.provider_payment_id or self.id} ({self.status})"


class WebhookStatus(models.TextChoices):
    APPLIED = "applied", "Applied"
    IGNORED = "ignored", "Recorded, not applied (state would move backwards)"
    MISMATCH = "mismatch", "Recorded, not applied (amount, currency or payment id mismatch)"
    WAITING = "waiting", "Waiting for the order to appear"
    UNMATCHED = "unmatched", "No such order (gave up)"


class WebhookInboxEntry(models.Model):
    """Every provider webhook accepted, keyed by its `webhook-id`: the dedupe record."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook_id = models.CharField(max_length=255, unique=True)
    event_type = models.CharField(max_length=64)
    payload = models.JSONField()
    order_id = models.UUIDField(null=True, blank=True, db_index=True)
    status = models.CharField(max_length=16, choices=WebhookStatus.choices)
    note = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=1)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        verbose_name = "webhook inbox entry"
        verbose_name_plural = "webhook inbox"
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="webhook_waiting_due_idx",
                condition=models.Q(status="waiting"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.webhook_id} ({self.status})"
