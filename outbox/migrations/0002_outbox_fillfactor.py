"""Room on each page for the relay's claim to update a row in place (issue 11).

The claim changes only the lease columns and the attempt count, none of them indexed, so
PostgreSQL can write the row's new version as a heap-only tuple (HOT: no new entry in any
of the table's five indexes) when the row's page has room for it. At the default fill
factor (100) a page of freshly inserted events has none, and every claim paid for five
index insertions. 70 keeps about a third of each page for those versions (pruned again
once the rows are published). Existing pages keep their layout; new ones follow.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("outbox", "0001_initial")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE outbox_outboxevent SET (fillfactor = 70)",
            reverse_sql="ALTER TABLE outbox_outboxevent RESET (fillfactor)",
        ),
    ]
