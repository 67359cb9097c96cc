# The API client model now lives in the clients app (clients 0001, same table): the
# foreign keys point there and the orders app forgets the model. State only; the database
# keeps its table, rows and constraints as they are.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("clients", "0001_initial"),
        ("orders", "0004_order_status_refunded"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="order",
                    name="client",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="orders",
                        to="clients.apiclient",
                    ),
                ),
                migrations.AlterField(
                    model_name="idempotencyrecord",
                    name="client",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="clients.apiclient",
                    ),
                ),
                migrations.DeleteModel(name="ApiClient"),
            ],
            database_operations=[],
        ),
    ]
