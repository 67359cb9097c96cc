# outbox_aggregate_idx duplicated the index of the unique constraint on (aggregate_type,
# aggregate_id, version); its place goes to (created_at, id), which the admin's newest-first
# list reads (a parallel scan and sort of the whole table at a million rows otherwise). Each
# event still writes as many index entries as before. Both concurrently: events keep being
# written and relayed while it runs.
#
# Raw SQL rather than AddIndexConcurrently/RemoveIndexConcurrently so that the migration can
# simply be run again: a CREATE INDEX CONCURRENTLY that fails (a deadlock, a cancelled
# statement) leaves an INVALID index behind under the same name, and the plain operation's
# rerun then fails with "already exists". The state operations tell Django what the SQL did.

from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("outbox", "0003_outboxevent_schema_version"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddIndex(
                    model_name="outboxevent",
                    index=models.Index(fields=["created_at", "id"], name="outbox_created_id_idx"),
                ),
                migrations.RemoveIndex(model_name="outboxevent", name="outbox_aggregate_idx"),
            ],
            database_operations=[
                # A leftover of a failed run, valid or not: building it again is cheaper
                # than telling an INVALID index from a valid one here.
                migrations.RunSQL(
                    "DROP INDEX CONCURRENTLY IF EXISTS outbox_created_id_idx",
                    reverse_sql=migrations.RunSQL.noop,
                ),
                migrations.RunSQL(
                    "CREATE INDEX CONCURRENTLY outbox_created_id_idx"
                    " ON outbox_outboxevent (created_at, id)",
                    reverse_sql="DROP INDEX CONCURRENTLY IF EXISTS outbox_created_id_idx",
                ),
                migrations.RunSQL(
                    "DROP INDEX CONCURRENTLY IF EXISTS outbox_aggregate_idx",
                    reverse_sql=(
                        "CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_aggregate_idx"
                        " ON outbox_outboxevent (aggregate_type, aggregate_id, version)"
                    ),
                ),
            ],
        ),
    ]
