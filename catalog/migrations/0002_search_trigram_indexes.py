"""GIN trigram indexes for ?search= (substring of upper(name) / upper(sku)).

pg_trgm ships with PostgreSQL's contrib package, which every normal install has but the
embedded pgserver wheel does not; without it search still works, by a sequential scan.
The indexes live outside Django's model state, so the two cases never drift apart.
"""

from django.db import migrations

CREATE = """
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX IF NOT EXISTS product_name_trgm
      ON catalog_product USING gin (upper(name) gin_trgm_ops);
    CREATE INDEX IF NOT EXISTS product_sku_trgm
      ON catalog_product USING gin (upper(sku) gin_trgm_ops);
  ELSE
    RAISE NOTICE 'pg_trgm is not available: product search runs without trigram indexes';
  END IF;
END
$$;
"""

DROP = """
DROP INDEX IF EXISTS product_name_trgm;
DROP INDEX IF EXISTS product_sku_trgm;
"""


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]

    operations = [migrations.RunSQL(CREATE, DROP)]
