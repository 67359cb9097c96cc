"""Indexes for the staff admin and the operations page at millions of orders (issue 11).

- orders_order (created_at DESC, id DESC): the changelist's order (-created_at, then -pk, the
  tie-breaker Django's admin adds) and the operations page's created_at window, status
  included so the per-hour counts are an index-only scan of the window;
- (status, created_at DESC, id DESC): ?status__exact= in that same order;
- paid_at of paid orders, with what the revenue chart sums: its window, index-only;
- upper(id::text): the admin's `=id` search (Django compares the uuid as text, iexact), so
  it and the email search can be OR-ed from two indexes (a BitmapOr) instead of a sequential scan;
- a GIN trigram index on upper(email::text): the admin's email search (icontains) — only
  where pg_trgm exists (not in the embedded pgserver wheel; see catalog 0002).

The indexes live outside Django's model state (RunSQL), so the two cases never drift apart.
"""

from django.db import migrations

CREATE = """
CREATE INDEX IF NOT EXISTS order_created_id_idx
  ON orders_order (created_at DESC, id DESC) INCLUDE (status);
CREATE INDEX IF NOT EXISTS order_status_created_id_idx
  ON orders_order (status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS order_paid_at_idx
  ON orders_order (paid_at) INCLUDE (currency, total, id) WHERE status = 'paid';
CREATE INDEX IF NOT EXISTS order_id_text_idx
  ON orders_order ((upper(id::text)));
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX IF NOT EXISTS order_email_trgm
      ON orders_order USING gin (upper(email::text) gin_trgm_ops);
  ELSE
    RAISE NOTICE 'pg_trgm is not available: admin email search runs without a trigram index';
  END IF;
END
$$;
"""

DROP = """
DROP INDEX IF EXISTS order_email_trgm;
DROP INDEX IF EXISTS order_id_text_idx;
DROP INDEX IF EXISTS order_paid_at_idx;
DROP INDEX IF EXISTS order_status_created_id_idx;
DROP INDEX IF EXISTS order_created_id_idx;
"""


class Migration(migrations.Migration):
    dependencies = [("orders", "0007_drop_order_payment_mirror")]

    operations = [migrations.RunSQL(CREATE, DROP)]
