"""What the benchmarks and the fault drill in bench/ share: logging, database URLs, manage.py,
database set-up, machine facts (cores, busy CPU, git revision) and the results folder.

Imported as `bench.common` once the script has put the repository root on sys.path (as it
does for scripts.processes). Like scripts/processes.py, only the standard library is
imported at module level (psycopg when a database is connected), so a script can use it
before Django is set up. Where the scripts differ (the exception a failing manage.py
raises, what to do with a database this script did not create), the caller says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from scripts.processes import PYTHON

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
# $BENCH_RESULTS_DIR sends a run's results elsewhere (the smoke tests use a temporary one).
RESULTS_DIR = Path(os.environ.get("BENCH_RESULTS_DIR") or BENCH_DIR / "results").resolve()
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Rate limits raised far above anything a run reaches, keeping the production window shape.
RAISED_RATE = "1000000000/60s"
CLK_TCK = os.sysconf("SC_CLK_TCK")

Log = Callable[[str], None]


def make_log(prefix: str) -> Log:
    """A log function writing `[<prefix> HH:MM:SS] message` lines to stderr."""

    def log(message: str) -> None:
        print(f"[{prefix} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    return log


# --------------------------------------------------------------------------- machine


def core_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle (all cores) since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


def git_revision() -> str:
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


# --------------------------------------------------------------------------- results


def utc_stamp() -> str:
    """The run's timestamp as it appears in result file names: 20260101T120000Z."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def shown_path(path: Path) -> str:
    """path relative to the repository when inside it (as the README quotes them), else whole."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def write_json(path: Path, data: object, *, default: Callable | None = None) -> None:
    """data as indented JSON, with a final newline."""
    path.write_text(json.dumps(data, indent=2, default=default) + "\n")


# --------------------------------------------------------------------------- arguments


def add_server_args(
    parser: argparse.ArgumentParser, *, database_env: str, database_default: str
) -> None:
    """--database-url (default: $<database_env>, else database_default) and --redis-url
    (default: $REDIS_URL, else the local Redis)."""
    parser.add_argument("--database-url", default=os.environ.get(database_env, database_default))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL))


# --------------------------------------------------------------------------- database


@dataclass(frozen=True)
class DbUrl:
    url: str
    host: str
    port: int
    user: str
    password: str
    name: str

    @classmethod
    def parse(cls, url: str, *, default_name: str) -> DbUrl:
        parsed = urlparse(url)
        return cls(
            url=url,
            host=unquote(parsed.hostname or "127.0.0.1"),
            port=parsed.port or 5432,
            user=unquote(parsed.username or "postgres"),
            password=unquote(parsed.password or ""),
            name=unquote(parsed.path.lstrip("/")) or default_name,
        )

    def connect(self, dbname: str | None = None, autocommit: bool = True):
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password or None,
            dbname=dbname or self.name,
            autocommit=autocommit,
            connect_timeout=5,
        )


def backend_pids(conn, dbname: str) -> list[int]:
    """PostgreSQL backends serving dbname (server-side pids), other than conn's own."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        [dbname],
    ).fetchall()
    return [row[0] for row in rows]


def manage(
    args: list[str],
    env: dict[str, str],
    *,
    timeout: float = 300,
    error: Callable[[str], BaseException] = RuntimeError,
) -> str:
    """Run manage.py with env; its stdout, or error(message with its stderr's tail)."""
    done = subprocess.run(
        [str(PYTHON), "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise error(f"manage.py {args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def create_and_migrate(
    db: DbUrl,
    env: dict[str, str],
    *,
    marker: str,
    log: Log,
    error: Callable[[str], BaseException] = RuntimeError,
) -> bool:
    """Create the database if missing (commented with `marker`) and migrate it. True if it
    carries `marker`, i.e. a script with that marker created it; what to do with one it did
    not create is the caller's to decide."""
    with db.connect(dbname="postgres") as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db.name]).fetchone()
        if not exists:
            log(f"creating database {db.name}")
            conn.execute(f'CREATE DATABASE "{db.name}"')
            conn.execute(f"COMMENT ON DATABASE \"{db.name}\" IS '{marker}'")
    log("migrating")
    manage(["migrate", "--no-input", "-v0"], env, error=error)
    with db.connect() as conn:
        comment = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            [db.name],
        ).fetchone()[0]
    return comment == marker
