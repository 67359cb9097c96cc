# outbox_aggregate_idx duplicated the index of the unique constraint on (aggregate_type,
# aggregate_id, version); its place goes to (created_at, id), which the admin's newest-first
# list reads (a parallel scan and sort of the whole table at a million rows otherwise). Each
# event still writes as many index entries as before. Both concurrently: events keep being
# written and relayed while it runs.

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("outbox", "0003_outboxevent_schema_version"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="outboxevent",
            index=models.Index(fields=["created_at", "id"], name="outbox_created_id_idx"),
        ),
        RemoveIndexConcurrently(model_name="outboxevent", name="outbox_aggregate_idx"),
    ]
