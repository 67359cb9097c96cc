"""The operations page's hourly rollup (issue 11): orders per created hour and status, revenue
per paid hour and currency, recounted by a beat task so that the page reads a few dozen rows
instead of a day of orders."""

import uuid

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0008_admin_scale_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="OrderHourRevenue",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        default=uuid.uuid4, editable=False, primary_key=True, serialize=False
                    ),
                ),
                ("hour", models.DateTimeField()),
                ("currency", models.CharField(max_length=3)),
                ("orders", models.PositiveIntegerField()),
                ("amount", models.DecimalField(decimal_places=2, max_digits=14)),
                ("counted_at", models.DateTimeField()),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("hour", "currency"), name="order_hour_revenue_once"
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="OrderHourStatusCount",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        default=uuid.uuid4, editable=False, primary_key=True, serialize=False
                    ),
                ),
                ("hour", models.DateTimeField()),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("pending_payment", "Pending payment"),
                            ("paid", "Paid"),
                            ("cancelled", "Cancelled"),
                            ("refunded", "Refunded"),
                        ],
                        max_length=32,
                    ),
                ),
                ("orders", models.PositiveIntegerField()),
                ("counted_at", models.DateTimeField()),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("hour", "status"), name="order_hour_status_once"
                    )
                ],
            },
        ),
    ]
