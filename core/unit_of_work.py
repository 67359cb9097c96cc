"""One transaction in one round trip: statements that several apps contribute, sent to
PostgreSQL together as one query string (issue 11).

A request that creates an order used to talk to PostgreSQL ~19 times, and held its
product locks across most of those trips. Here each app adds the statements for its own
tables (orders its rows, catalog its stock guard, outbox its envelope, payments its row
through its subscriber) to a `UnitOfWork`; `commit()` orders them by phase and sends them
as ONE multi-statement query. PostgreSQL runs such a string as one implicit transaction:
every statement or none, and one round trip whatever the number of statements.

Phases put the locks last, so shared rows are held only for the lock, the guarded update
and the commit:

1. CLAIM: assertions on rows the request already owns (its idempotency claim);
2. WRITE: INSERTs of new rows, which nobody else waits for;
3. LOCK: row locks on shared rows, in primary-key order (through the owning app's statement);
4. GUARD: conditional updates of the locked rows, whose constraint is the guard.

A statement declares the failures that mean "refused" (a SQLSTATE, and the constraint for
constraint errors); `commit()` raises `WorkRefused(statement name)` for those, with nothing
written, and lets any other database error through. Parameters are merged client-side
(psycopg's ClientCursor, Django's default), which is what lets one string carry several
statements with parameters.

Inside an atomic block (a caller's transaction, a TestCase) the statements run in a
savepoint instead: the same effects, at the cost of the savepoint's own trips.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from django.db import DatabaseError, connections, transaction
from django.db.models import Model
from django.db.models.sql import InsertQuery

from core.nudge import nudges_batched

# Between the statements of the one query string (no statement contains it).
UNIT_OF_WORK_SEPARATOR = ";\n"


class Phase(IntEnum):
    CLAIM = 0
    WRITE = 1
    LOCK = 2
    GUARD = 3


@dataclass(frozen=True)
class Refusal:
    """A failure of a statement that is an answer, not an accident."""

    sqlstate: str
    constraint: str | None = None


@dataclass(frozen=True)
class Statement:
    name: str
    sql: str
    params: tuple
    phase: Phase
    refusals: tuple[Refusal, ...] = ()


class WorkRefused(Exception):
    """A statement refused (one of its declared refusals): nothing of the work was written."""

    def __init__(self, statement: str) -> None:
        super().__init__(f"{statement} refused; the unit of work was rolled back")
        self.statement = statement


class UnitOfWork:
    """Statements collected from several apps, committed in one round trip."""

    def __init__(self, using: str = "default") -> None:
        self.using = using
        self._statements: list[Statement] = []
        self._after_commit: list[Callable[[], None]] = []

    def add(self, statement: Statement) -> None:
        self._statements.append(statement)

    def insert(self, name: str, rows: Sequence[Model]) -> None:
        """INSERT `rows` (one model, primary keys set) as the ORM would, in the WRITE phase.

        Compiled now, so auto_now fields are filled in on `rows` right away, as a save()
        would have done.
        """
        model = type(rows[0])
        query = InsertQuery(model)
        query.insert_values(model._meta.concrete_fields, list(rows), raw=False)
        [(sql, params)] = query.get_compiler(using=self.using).as_sql()
        self.add(Statement(name=name, sql=sql, params=tuple(params), phase=Phase.WRITE))

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the work is committed (never if it is refused or fails)."""
        self._after_commit.append(callback)

    @property
    def statement_names(self) -> list[str]:
        """The statements in the order `commit()` sends them."""
        return [statement.name for statement in self._ordered()]

    def commit(self) -> None:
        """Send every statement as one query string; raises WorkRefused or DatabaseError."""
        statements = self._ordered()
        sql = UNIT_OF_WORK_SEPARATOR.join(statement.sql for statement in statements)
        params = [param for statement in statements for param in statement.params]
        connection = connections[self.using]
        try:
            if connection.in_atomic_block:
                with transaction.atomic(using=self.using), connection.cursor() as cursor:
                    cursor.execute(sql, params)
            else:
                with connection.cursor() as cursor:
                    cursor.execute(sql, params)
        except DatabaseError as error:
            refused = _refused_statement(statements, error)
            if refused is None:
                raise
            raise WorkRefused(refused) from error
        self._run_after_commit(connection)

    def _run_after_commit(self, connection) -> None:
        if connection.in_atomic_block:
            # Committed only with the caller's transaction: run them when that commits.
            for callback in self._after_commit:
                transaction.on_commit(callback, using=self.using)
            return
        # Committed. The nudges of several tasks that they ask for go out together, as after
        # the commit of an atomic block.
        with nudges_batched():
            for callback in self._after_commit:
                callback()

    def _ordered(self) -> list[Statement]:
        return sorted(self._statements, key=lambda statement: statement.phase)  # stable


def _refused_statement(statements: Sequence[Statement], error: DatabaseError) -> str | None:
    diag = getattr(error.__cause__, "diag", None)
    if diag is None:
        return None
    for statement in statements:
        for refusal in statement.refusals:
            if refusal.sqlstate == diag.sqlstate and refusal.constraint in (
                None,
                diag.constraint_name,
            ):
                return statement.name
    return None
