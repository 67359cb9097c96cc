# The API client model moved here from the orders app. Its table, rows, permissions and
# group grants stay exactly where they are: this migration only tells Django's state that
# the model now belongs to `clients` (same db_table), and re-labels its content type so
# every auth_permission row (and so every group grant and admin log entry) follows it.

import uuid

from django.db import migrations, models


def relabel_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    moved = ContentType.objects.using(db).filter(app_label="orders", model="apiclient")
    if not ContentType.objects.using(db).filter(app_label="clients", model="apiclient").exists():
        moved.update(app_label="clients")


def restore_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    if not ContentType.objects.using(db).filter(app_label="orders", model="apiclient").exists():
        ContentType.objects.using(db).filter(app_label="clients", model="apiclient").update(
            app_label="orders"
        )


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("orders", "0004_order_status_refunded"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ApiClient",
                    fields=[
                        (
                            "id",
                            models.UUIDField(
                                default=uuid.uuid4,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        ("name", models.CharField(max_length=100, unique=True)),
                        (
                            "key_prefix",
                            models.CharField(editable=False, max_length=16, unique=True),
                        ),
                        (
                            "key_hash",
                            models.CharField(editable=False, max_length=64, unique=True),
                        ),
                        ("is_active", models.BooleanField(default=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "revoked_at",
                            models.DateTimeField(blank=True, editable=False, null=True),
                        ),
                    ],
                    options={
                        "verbose_name": "API client",
                        "ordering": ["name"],
                        "db_table": "orders_apiclient",
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(relabel_content_type, restore_content_type),
    ]
