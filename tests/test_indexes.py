"""No index of the project's tables duplicates another: each one costs a write on every
insert (and on every update of its columns), so two that answer the same lookups double
that cost for nothing. A foreign key's own index counts: declaring the same column again in
Meta.indexes duplicates it."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.db import connection

PROJECT_APPS = ("catalog", "clients", "orders", "payments", "outbox")

# Two indexes are the same when they index the same columns or expressions, with the same
# operator classes and collations, under the same predicate (uniqueness aside: a unique
# index answers every lookup the plain one does).
DUPLICATE_INDEXES = """
    SELECT table_class.relname, index_class.relname, other_class.relname
    FROM pg_index this
    JOIN pg_index other
      ON other.indrelid = this.indrelid
     AND other.indexrelid > this.indexrelid
     AND other.indkey::int2[] = this.indkey::int2[]
     AND other.indclass::oid[] = this.indclass::oid[]
     AND other.indcollation::oid[] = this.indcollation::oid[]
     AND pg_get_expr(other.indexprs, other.indrelid)
         IS NOT DISTINCT FROM pg_get_expr(this.indexprs, this.indrelid)
     AND pg_get_expr(other.indpred, other.indrelid)
         IS NOT DISTINCT FROM pg_get_expr(this.indpred, this.indrelid)
    JOIN pg_class table_class ON table_class.oid = this.indrelid
    JOIN pg_class index_class ON index_class.oid = this.indexrelid
    JOIN pg_class other_class ON other_class.oid = other.indexrelid
    WHERE table_class.relname = ANY(%s)
    ORDER BY 1, 2
"""


def _project_tables() -> list[str]:
    return [
        model._meta.db_table
        for app_label in PROJECT_APPS
        for model in apps.get_app_config(app_label).get_models()
    ]


def _duplicates(tables: list[str]) -> list[tuple[str, str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(DUPLICATE_INDEXES, [tables])
        return cursor.fetchall()


@pytest.mark.django_db
def test_no_index_of_the_projects_tables_duplicates_another():
    tables = _project_tables()
    assert "outbox_outboxevent" in tables and "orders_orderitem" in tables
    assert _duplicates(tables) == []


@pytest.mark.django_db
def test_a_duplicate_index_is_found():
    # given an index that repeats a foreign key's own
    with connection.cursor() as cursor:
        cursor.execute("CREATE INDEX repeated_product_idx ON orders_orderitem (product_id)")
    # then the check names it beside the one it repeats
    found = _duplicates(["orders_orderitem"])
    assert len(found) == 1
    assert found[0][0] == "orders_orderitem"
    assert "repeated_product_idx" in found[0][1:]
