"""Changelists over tables of millions of rows (as large Django admins do them).

Django's admin counts the filtered queryset on every changelist page (`paginator.count`);
on a table of millions of rows that `COUNT(*)` is most of the page's time. The paginator:

- unfiltered: takes the planner's estimate (`pg_class.reltuples`, kept fresh by autovacuum's
  ANALYZE) when it is at least `count_cap`; a smaller table is counted exactly;
- filtered or searched: counts at most `count_cap + 1` rows (`SELECT count(*) FROM (… LIMIT
  cap + 1)`), so the answer is exact up to the cap and "at least the cap" beyond it.

Use with `show_full_result_count = False` (the other full count Django makes).

Also here: the date hierarchy's buckets found by index seeks (DateBucketsBySeekQuerySet), a
search resolved to the matching ids once per page (SearchResolvedToIds), and a list filter
whose distinct values come from an index by seeks (DistinctValuesBySeekFilter).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections, router
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.functional import cached_property

# Beyond this many rows a changelist says "cap" (or the estimate): 100 pages of 100.
DEFAULT_COUNT_CAP = 10_000


def estimated_row_count(queryset: QuerySet) -> int | None:
    """The planner's row estimate of the queryset's table, None if never analyzed."""
    table = queryset.model._meta.db_table
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table]
        )
        row = cursor.fetchone()
    if row is None or row[0] is None or row[0] < 0:
        return None
    return int(row[0])


def capped_count(queryset: QuerySet, *, cap: int) -> int:
    """Rows of the queryset, counted up to `cap + 1` (a count above `cap` means "more")."""
    return queryset.order_by()[: cap + 1].count()


def planned_row_count(queryset: QuerySet) -> int:
    """The rows the planner expects the queryset to return (EXPLAIN, nothing executed)."""
    plan = queryset.order_by().explain(format="json")
    if not plan:  # a queryset Django knows to be empty (`pk__in=[]`) is never sent
        return 0
    return int(json.loads(plan)[0]["Plan"]["Plan Rows"])


class EstimatedCountPaginator(Paginator):
    count_cap = DEFAULT_COUNT_CAP

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return super().count
        if not queryset.query.where and not queryset.query.distinct:
            estimate = estimated_row_count(queryset)
            if estimate is not None and estimate >= self.count_cap:
                return estimate
        return min(capped_count(queryset, cap=self.count_cap), self.count_cap)


class DateBucketsBySeekQuerySet(QuerySet):
    """A queryset whose `datetimes()` (the admin's date hierarchy: the distinct years,
    months or days holding rows) seeks bucket by bucket through an index on the field —
    one "first row at or after" probe per bucket — instead of sorting every row of a large
    result; one the planner expects to be small (under the count cap) is answered by the
    usual DISTINCT. Either way the buckets are the same."""

    count_cap = DEFAULT_COUNT_CAP

    def datetimes(self, field_name, kind, order="ASC", tzinfo=None):
        # The planner's estimate, not a count: a wrong guess costs time, never the answer.
        small = planned_row_count(self) < self.count_cap
        if small or kind not in ("year", "month", "day"):
            return super().datetimes(field_name, kind, order=order, tzinfo=tzinfo)
        zone = tzinfo or timezone.get_current_timezone()
        rows = self.order_by(field_name).values_list(field_name, flat=True)
        buckets: list[datetime] = []
        found = rows.filter(**{f"{field_name}__isnull": False}).first()
        while found is not None:
            buckets.append(_bucket_start(found.astimezone(zone), kind))
            found = rows.filter(**{f"{field_name}__gte": _next_bucket(buckets[-1], kind)}).first()
        return buckets if order == "ASC" else buckets[::-1]


def _bucket_start(moment: datetime, kind: str) -> datetime:
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind in ("year", "month"):
        start = start.replace(day=1)
    if kind == "year":
        start = start.replace(month=1)
    return start


def _next_bucket(start: datetime, kind: str) -> datetime:
    if kind == "day":
        naive = start.replace(tzinfo=None) + timedelta(days=1)
    elif kind == "month":
        year, month = divmod(start.month, 12)
        naive = start.replace(tzinfo=None, year=start.year + year, month=month + 1)
    else:
        naive = start.replace(tzinfo=None, year=start.year + 1)
    return timezone.make_aware(naive, start.tzinfo)


def with_date_buckets_by_seek(queryset: QuerySet) -> DateBucketsBySeekQuerySet:
    """The same queryset (model, query, database) as a DateBucketsBySeekQuerySet."""
    return DateBucketsBySeekQuerySet(
        model=queryset.model,
        query=queryset.query.chain(),
        using=queryset.db,
    )


class SearchResolvedToIds:
    """ModelAdmin mixin: a search term that matches at most `search_ids_cap` rows is looked up
    once, and the page's other queries (the count, the date hierarchy's bounds and buckets,
    the rows) read those rows by primary key instead of each repeating the search.

    A substring search (`icontains`, served by a trigram index) costs a walk through the
    index's posting lists each time it runs: a few ms on millions of rows, four times per
    page. The rows found are exactly the search's, so the page shows the same; a term that
    matches more than the cap (an unselective one, like a domain) is left as Django made it.
    """

    search_ids_cap = 1000

    def get_search_results(self, request, queryset, search_term):
        found, may_have_duplicates = super().get_search_results(  # type: ignore[misc]
            request, queryset, search_term
        )
        if not search_term.strip() or may_have_duplicates:
            return found, may_have_duplicates
        ids = list(found.order_by().values_list("pk", flat=True)[: self.search_ids_cap + 1])
        if len(ids) > self.search_ids_cap:
            return found, may_have_duplicates
        return queryset.filter(pk__in=ids), may_have_duplicates


class DistinctValuesBySeekFilter(admin.AllValuesFieldListFilter):
    """The admin's "all values" list filter, its distinct values found by one index seek per
    value (a recursive "next value after this one" query, PostgreSQL's loose index scan)
    instead of a DISTINCT over every row. Only for a field that leads an index and has few
    distinct values, in an admin whose queryset is the whole table (the stock filter offers
    the values of the admin's queryset); the choices are then the same."""

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        # Any iterable of values serves the filter's choices(); the stubs say QuerySet.
        self.lookup_choices = distinct_values_by_seek(model, field.column)  # type: ignore[assignment]


def distinct_values_by_seek(model, column: str) -> list:
    """The column's distinct non-null values, ascending, by seeks through an index on it."""
    connection = connections[router.db_for_read(model)]
    table = connection.ops.quote_name(model._meta.db_table)
    name = connection.ops.quote_name(column)
    # Names from the model's own metadata, quoted: nothing of the request reaches the SQL.
    sql = f"""
        WITH RECURSIVE seek(value) AS (
            (SELECT {name} FROM {table} WHERE {name} IS NOT NULL ORDER BY {name} LIMIT 1)
            UNION ALL
            SELECT (SELECT {name} FROM {table} WHERE {name} > seek.value
                    ORDER BY {name} LIMIT 1)
            FROM seek WHERE seek.value IS NOT NULL
        )
        SELECT value FROM seek WHERE value IS NOT NULL
    """  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return [row[0] for row in cursor.fetchall()]
