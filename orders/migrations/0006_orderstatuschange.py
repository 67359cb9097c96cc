# Order status history (issue 10 item 4), as Oscar's OrderStatusChange: one row per status
# change, written by orders.services in the changing transaction and kept for ever. The
# RunPython backfills existing orders from what their row knows (created_at, paid_at,
# cancelled_at + cancel_reason, refunded via updated_at); reversing drops the table.

import uuid

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

STATUS_CHOICES = [
    ("pending_payment", "Pending payment"),
    ("paid", "Paid"),
    ("cancelled", "Cancelled"),
    ("refunded", "Refunded"),
]
ACTOR_CHOICES = [
    ("api_client", "API client"),
    ("staff", "Staff user"),
    ("payment_provider", "Payment provider"),
    ("system", "System"),
]
BACKFILLED = " (backfilled from the order row)"
BATCH_SIZE = 2000

# Who cancels for each reason (SPEC §2): the customer through the API, staff in the admin,
# the provider's webhook, or the expiry task.
CANCEL_ACTORS = {
    "customer_requested": "api_client",
    "staff_cancelled": "staff",
    "payment_failed": "payment_provider",
    "payment_expired": "system",
}
ACTOR_LABELS = {"staff": "staff", "payment_provider": "payment provider", "system": "system"}


def _history_of(order, StatusChange):
    """The history an order row implies: created, then paid and/or cancelled or refunded."""
    client = {"actor_id": str(order.client_id), "actor_label": order.client.name + BACKFILLED}
    provider = {"actor_id": "", "actor_label": ACTOR_LABELS["payment_provider"] + BACKFILLED}
    steps = [("", "pending_payment", order.created_at, "order placed", "api_client", client)]
    if order.paid_at is not None:
        steps.append(
            (
                "pending_payment",
                "paid",
                order.paid_at,
                "payment succeeded",
                "payment_provider",
                provider,
            )
        )
    if order.status == "refunded":
        steps.append(
            ("paid", "refunded", order.updated_at, "payment refunded", "payment_provider", provider)
        )
    if order.status == "cancelled":
        actor_type = CANCEL_ACTORS.get(order.cancel_reason, "system")
        who = (
            client
            if actor_type == "api_client"
            else {"actor_id": "", "actor_label": ACTOR_LABELS[actor_type] + BACKFILLED}
        )
        steps.append(
            (
                "pending_payment",
                "cancelled",
                order.cancelled_at,
                order.cancel_reason,
                actor_type,
                who,
            )
        )
    return [
        StatusChange(
            order_id=order.pk,
            old_status=old,
            new_status=new,
            event_version=version,
            reason=reason,
            actor_type=actor_type,
            created_at=when or order.updated_at,
            **who,
        )
        for version, (old, new, when, reason, actor_type, who) in enumerate(steps, start=1)
    ]


def backfill_status_history(apps, schema_editor):
    Order = apps.get_model("orders", "Order")
    StatusChange = apps.get_model("orders", "OrderStatusChange")
    pending = Order.objects.filter(status_changes__isnull=True).select_related("client")
    batch = []
    for order in pending.iterator(chunk_size=BATCH_SIZE):
        batch.extend(_history_of(order, StatusChange))
        if len(batch) >= BATCH_SIZE:
            StatusChange.objects.bulk_create(batch)
            batch = []
    StatusChange.objects.bulk_create(batch)


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0005_apiclient_moved_to_clients"),
    ]

    operations = [
        migrations.CreateModel(
            name="OrderStatusChange",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        default=uuid.uuid4, editable=False, primary_key=True, serialize=False
                    ),
                ),
                ("old_status", models.CharField(blank=True, choices=STATUS_CHOICES, max_length=32)),
                ("new_status", models.CharField(choices=STATUS_CHOICES, max_length=32)),
                ("event_version", models.PositiveIntegerField()),
                ("reason", models.CharField(blank=True, default="", max_length=200)),
                ("actor_type", models.CharField(choices=ACTOR_CHOICES, max_length=32)),
                ("actor_id", models.CharField(blank=True, default="", max_length=64)),
                ("actor_label", models.CharField(blank=True, default="", max_length=200)),
                ("correlation_id", models.CharField(blank=True, default="", max_length=128)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "order",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="status_changes",
                        to="orders.order",
                    ),
                ),
            ],
            options={
                "ordering": ["created_at", "event_version"],
                "indexes": [
                    models.Index(
                        fields=["order", "created_at"], name="order_status_change_order_idx"
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("order", "event_version"), name="order_status_change_version_once"
                    )
                ],
            },
        ),
        migrations.RunPython(backfill_status_history, migrations.RunPython.noop, elidable=True),
    ]
