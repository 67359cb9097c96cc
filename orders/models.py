"""Orders tables: orders, their items, their status history, and idempotency records (each
order and record owned by an API client)."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class OrderStatus(models.TextChoices):
    PENDING_PAYMENT = "pending_payment", "Pending payment"
    PAID = "paid", "Paid"
    CANCELLED = "cancelled", "Cancelled"
    REFUNDED = "refunded", "Refunded"


class CancelReason(models.TextChoices):
    CUSTOMER_REQUESTED = "customer_requested", "Customer requested"
    STAFF_CANCELLED = "staff_cancelled", "Staff cancelled"
    PAYMENT_FAILED = "payment_failed", "Payment failed"
    PAYMENT_EXPIRED = "payment_expired", "Payment expired"


# The whole state machine (SPEC §2). `cancelled` and `refunded` are final; `paid` moves
# only when the provider reports a refund of the order's succeeded payment.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    OrderStatus.PENDING_PAYMENT: frozenset({OrderStatus.PAID, OrderStatus.CANCELLED}),
    OrderStatus.PAID: frozenset({OrderStatus.REFUNDED}),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REFUNDED: frozenset(),
}


class Order(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client = models.ForeignKey("clients.ApiClient", on_delete=models.PROTECT, related_name="orders")
    email = models.EmailField(max_length=254)
    status = models.CharField(
        max_length=32, choices=OrderStatus.choices, default=OrderStatus.PENDING_PAYMENT
    )
    cancel_reason = models.CharField(
        max_length=32, choices=CancelReason.choices, blank=True, default=""
    )
    total = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    # Version of the last event written for this order; bumped with every transition
    # under the order's row lock, so events are numbered 1, 2, 3... without gaps.
    event_version = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(total__gte=0), name="order_total_non_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=[s.value for s in OrderStatus]),
                name="order_status_valid",
            ),
            # A cancelled order always says why and when; nothing else carries a reason.
            models.CheckConstraint(
                condition=(
                    models.Q(status=OrderStatus.CANCELLED, cancelled_at__isnull=False)
                    & ~models.Q(cancel_reason="")
                )
                | (~models.Q(status=OrderStatus.CANCELLED) & models.Q(cancel_reason="")),
                name="order_cancel_reason_iff_cancelled",
            ),
            # A refunded order was paid first: it keeps its paid_at.
            models.CheckConstraint(
                condition=~models.Q(status__in=[OrderStatus.PAID, OrderStatus.REFUNDED])
                | models.Q(paid_at__isnull=False),
                name="order_paid_has_paid_at",
            ),
        ]
        indexes = [
            models.Index(fields=["client", "-created_at", "-id"], name="order_client_created_idx"),
            models.Index(
                fields=["client", "status", "-created_at"], name="order_client_status_idx"
            ),
            models.Index(fields=["client", "email"], name="order_client_email_idx"),
            models.Index(
                fields=["expires_at"],
                name="order_pending_expiry_idx",
                condition=models.Q(status="pending_payment"),
            ),
            models.Index(fields=["status", "-created_at"], name="order_status_created_idx"),
            models.Index(fields=["email"], name="order_email_idx"),
        ]

    def __str__(self) -> str:
        return f"Order {self.id} ({self.status})"


class OrderItem(models.Model):
    """One line of an order, with the product's sku, name and price as they were then."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")
    product = models.ForeignKey("catalog.Product", on_delete=models.PROTECT, related_name="+")
    sku = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    quantity = models.PositiveIntegerField()
    line_total = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.UniqueConstraint(fields=["order", "product"], name="order_item_product_once"),
            models.CheckConstraint(
                condition=models.Q(quantity__gte=1, quantity__lte=1000),
                name="order_item_quantity_range",
            ),
        ]
        # product_id's index is the foreign key's own (one index write per line, not two).

    def __str__(self) -> str:
        return f"{self.quantity} × {self.sku}"


class ActorType(models.TextChoices):
    """Who moved an order: the API client (customer), a staff user, the provider, the clock."""

    API_CLIENT = "api_client", "API client"
    STAFF = "staff", "Staff user"
    PAYMENT_PROVIDER = "payment_provider", "Payment provider"
    SYSTEM = "system", "System"


class OrderStatusChange(models.Model):
    """One step of an order's status history (who, what, when, why), as Oscar's
    OrderStatusChange: written in the transaction that changes the status, kept for ever.

    `event_version` is the order's event version after the change (1 for creation), so the
    row names the order event it produced and (order, event_version) orders the history.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # PROTECT: orders are never deleted, and an audit trail must not vanish with a cascade.
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="status_changes")
    old_status = models.CharField(max_length=32, choices=OrderStatus.choices, blank=True)
    new_status = models.CharField(max_length=32, choices=OrderStatus.choices)
    event_version = models.PositiveIntegerField()
    reason = models.CharField(max_length=200, blank=True, default="")
    actor_type = models.CharField(max_length=32, choices=ActorType.choices)
    # The API client's or staff user's primary key; blank for the provider and the system.
    actor_id = models.CharField(max_length=64, blank=True, default="")
    actor_label = models.CharField(max_length=200, blank=True, default="")
    # The request id (or task correlation id) of the change, as on the event it produced.
    correlation_id = models.CharField(max_length=128, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "event_version"]
        constraints = [
            models.UniqueConstraint(
                fields=["order", "event_version"], name="order_status_change_version_once"
            ),
        ]
        indexes = [
            models.Index(fields=["order", "created_at"], name="order_status_change_order_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.old_status or '—'} → {self.new_status}"


class IdempotencyStatus(models.TextChoices):
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"


class IdempotencyRecord(models.Model):
    """One claimed `Idempotency-Key` of one client, and the response it produced.

    The unique constraint on (client, key) is what makes "exactly one request wins": the
    claim is an INSERT, never a check-then-insert.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client = models.ForeignKey("clients.ApiClient", on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=IdempotencyStatus.choices)
    # Identifies the request holding the claim; completing needs the same token, so a
    # request whose lease was taken over can never store a second outcome.
    claim_token = models.UUIDField()
    locked_until = models.DateTimeField()
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.BinaryField(null=True, blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    order = models.ForeignKey(
        Order, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["client", "key"], name="idempotency_unique_client_key"),
        ]
        indexes = [
            models.Index(fields=["expires_at"], name="idempotency_expires_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


# --- the operations page's hourly rollup (orders.rollups writes it, orders.selectors reads it)


class OrderHourStatusCount(models.Model):
    """How many orders created in one UTC hour have `status`, as counted at `counted_at`.

    A beat task recounts every closed hour of the last day each minute (orders.rollups),
    each status of each hour, zeros included; the order write path never touches this table,
    so it adds nothing to an order's transaction and no row that orders contend for.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    hour = models.DateTimeField()
    status = models.CharField(max_length=32, choices=OrderStatus.choices)
    orders = models.PositiveIntegerField()
    counted_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hour", "status"], name="order_hour_status_once"),
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}:00 {self.status}: {self.orders}"


class OrderHourRevenue(models.Model):
    """Orders paid (and not refunded) in one UTC hour, per currency: how many and the sum of
    their totals, as counted at `counted_at`. Written with OrderHourStatusCount; the shop
    currency has a row for every hour counted, zero or not."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    hour = models.DateTimeField()
    currency = models.CharField(max_length=3)
    orders = models.PositiveIntegerField()
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    counted_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hour", "currency"], name="order_hour_revenue_once"),
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}:00 {self.currency} {self.amount}"
