# Two indexes that duplicated the foreign keys' own (same column, same kind): each order
# wrote both, for every line and for its idempotency record. Dropped concurrently, so orders
# keep being written while it runs.

from django.contrib.postgres.operations import RemoveIndexConcurrently
from django.db import migrations


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("orders", "0009_operations_hour_rollup"),
    ]

    operations = [
        RemoveIndexConcurrently(model_name="idempotencyrecord", name="idempotency_order_idx"),
        RemoveIndexConcurrently(model_name="orderitem", name="order_item_product_idx"),
    ]
