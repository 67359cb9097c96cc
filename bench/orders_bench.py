"""Benchmark of POST /api/v1/orders/ against pgbench running the same SQL (see bench/README.md).

    .venv/bin/python bench/orders_bench.py [--duration 10] [--concurrency 1,8,32]
        [--variants normal,hot] [--database-url postgres://...] [--workers N]

Sets up its own database (created and migrated if missing), an API client and three
products with huge stock; starts the service under gunicorn the way `make run` does;
drives it from bench/loadgen.py (a separate process) at each concurrency; runs pgbench
with bench/pgbench_order*.sql on the same database at the same concurrency; prints a
table and writes it as JSON to bench/results/. Everything it starts is stopped on exit,
Ctrl-C or error; the shared PostgreSQL and Redis are only used, never stopped or flushed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402 - after the path set-up
    RAISED_RATE,
    RESULTS_DIR,
    DbUrl,
    add_server_args,
    backend_pids,
    core_count,
    create_and_migrate,
    git_revision,
    machine_busy_seconds,
    make_log,
    shown_path,
    utc_stamp,
    write_json,
)
from bench.common import manage as _manage  # noqa: E402
from scripts.processes import (  # noqa: E402
    PYTHON,
    ManagedProcess,
    cpu_seconds,
    web_command,
)
from scripts.servers import child_pids, free_port  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/orders_bench"
# Marks a database this script created, the only kind it empties before a run.
DB_MARKER = "orders_bench: created by bench/orders_bench.py; emptied before every run"
HUGE_STOCK = 2_000_000_000  # int4 column; a run takes well under a million units
PRODUCTS = {  # sku: (name, price)
    "BENCH-A": ("Bench product A", "12.50"),
    "BENCH-B": ("Bench product B", "3.10"),
    "BENCH-HOT": ("Bench hot product", "9.99"),
}
# The spread variant's products: ids and skus pgbench_order_spread.sql can compute.
SPREAD_RANGE = range(100000, 100100)
SPREAD_PRICE = "5.00"
VARIANTS = ("normal", "hot", "spread")
SCRIPTS = {
    "normal": "pgbench_order.sql",
    "hot": "pgbench_order_hot.sql",
    "spread": "pgbench_order_spread.sql",
}
# The second floor: the same work in the best shape we can write (one round trip, locks last).
BEST_SCRIPTS = {
    "normal": "pgbench_order_best.sql",
    "hot": "pgbench_order_hot_best.sql",
    "spread": "pgbench_order_spread_best.sql",
}


def spread_product_id(n: int) -> str:
    return f"00000000-0000-4000-8000-000000{n}"


# --------------------------------------------------------------------------- small helpers


log = make_log("bench")


def find_pgbench() -> tuple[str, str]:
    """pgbench from PATH, else the one in the pgserver package; returns (path, origin)."""
    found = shutil.which("pgbench")
    if found:
        return found, "PATH"
    spec = importlib.util.find_spec("pgserver")
    if spec and spec.submodule_search_locations:
        candidate = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / "pgbench"
        if candidate.is_file():
            return str(candidate), "pgserver PyPI package (not on PATH)"
    raise SystemExit("pgbench not found: install postgresql-client or the pgserver package")


# --------------------------------------------------------------------------- CPU accounting


@dataclass
class CpuSample:
    """CPU seconds at one moment: the machine, our reaped children, and watched processes."""

    wall: float
    machine: float
    children: float
    load1: float
    server: dict[int, float]  # gunicorn master and workers
    postgres: dict[int, float]  # backends connected to the bench database

    @classmethod
    def take(cls, *, server_pids: list[int], postgres_pids: list[int]) -> CpuSample:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            wall=time.monotonic(),
            machine=machine_busy_seconds(),
            children=usage.ru_utime + usage.ru_stime,
            load1=os.getloadavg()[0],
            server={pid: cpu_seconds(pid) for pid in server_pids},
            postgres={pid: cpu_seconds(pid) for pid in postgres_pids},
        )


def _delta(before: dict[int, float], after: dict[int, float]) -> float:
    # A process born during the phase spent all its CPU in it; one that died is lost.
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


def cpu_split(before: CpuSample, after: CpuSample) -> dict:
    """Percent of ONE core used by each part during the phase (2 cores = 200% max)."""
    wall = after.wall - before.wall
    machine = after.machine - before.machine
    server = _delta(before.server, after.server)
    postgres = _delta(before.postgres, after.postgres)
    client = after.children - before.children  # loadgen or pgbench (reaped children)
    return {
        "machine_pct": round(100 * machine / wall),
        "client_pct": round(100 * client / wall),
        "gunicorn_pct": round(100 * server / wall),
        "postgres_pct": round(100 * postgres / wall),
        # Redis, PostgreSQL background processes and anything else on the machine,
        # including other people's work on a shared box.
        "other_pct": round(100 * max(0.0, machine - server - client - postgres) / wall),
        "load1_before": round(before.load1, 2),
    }


def bench_backend_pids(db: DbUrl) -> list[int]:
    """PostgreSQL backends serving the bench database (server-side pids, same machine)."""
    try:
        with db.connect() as conn:
            return backend_pids(conn, db.name)
    except Exception:  # best effort: CPU attribution only
        return []


# --------------------------------------------------------------------------- setup


def manage(args: list[str], env: dict[str, str]) -> str:
    return _manage(args, env, error=SystemExit)


def prepare_database(db: DbUrl, env: dict[str, str]) -> None:
    """Create the database if missing, migrate it, and empty it if this script owns it."""
    if create_and_migrate(db, env, marker=DB_MARKER, log=log, error=SystemExit):
        with db.connect() as conn:
            # Start every run from empty order tables so runs are comparable.
            conn.execute(
                "TRUNCATE orders_idempotencyrecord, orders_orderitem, orders_order, "
                "outbox_outboxevent CASCADE"
            )
    else:
        log(f"database {db.name} was not created by this script: not emptying it")


@dataclass(frozen=True)
class Product:
    id: str
    sku: str
    price: str


def upsert_products(db: DbUrl) -> dict[str, Product]:
    """The bench products, active and with huge stock (direct SQL: no history rows)."""
    products = {}
    wanted = [(None, sku, name, price) for sku, (name, price) in PRODUCTS.items()]
    wanted += [
        (spread_product_id(n), f"BENCH-S-{n}", f"Bench spread product {n}", SPREAD_PRICE)
        for n in SPREAD_RANGE
    ]
    with db.connect() as conn:
        for product_id, sku, name, price in wanted:
            row = conn.execute(
                """
                INSERT INTO catalog_product
                    (id, sku, name, description, price, stock, is_active, created_at, updated_at)
                VALUES (COALESCE(%s::uuid, gen_random_uuid()), %s, %s, '', %s, %s, true,
                        now(), now())
                ON CONFLICT (sku) DO UPDATE
                    SET stock = EXCLUDED.stock, price = EXCLUDED.price, is_active = true
                RETURNING id::text, price::text
                """,
                [product_id, sku, name, price, HUGE_STOCK],
            ).fetchone()
            products[sku] = Product(id=row[0], sku=sku, price=row[1])
        conn.execute("ANALYZE catalog_product")
    return products


def celery_queue(run_tag: str) -> str:
    return f"orders-bench-{run_tag}"


def redis_cleanup(redis_url: str, run_tag: str) -> None:
    """Delete the keys of this run's private Celery queue (nobody consumes it). Only keys
    carrying this run's tag; rate-limit keys expire by themselves. Never a FLUSH."""
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        keys = list(client.scan_iter(match=f"*{celery_queue(run_tag)}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except Exception as exc:  # best effort: report, do not mask the run's outcome
        log(f"could not delete this run's Celery queue keys: {exc}")


# --------------------------------------------------------------------------- processes


@dataclass
class Service:
    """gunicorn as `make run` starts it, in its own process group."""

    env: dict[str, str]
    port: int
    log_path: Path
    process: ManagedProcess | None = None
    log_offset: int = 0
    prometheus_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="bench-prom-"))

    def start(self, deadline_s: float = 60.0) -> None:
        env = self.env | {
            "BIND": f"127.0.0.1:{self.port}",
            "PROMETHEUS_MULTIPROC_DIR": self.prometheus_dir,
        }
        # --no-control-socket: gunicorn 27 otherwise binds ~/.gunicorn/gunicorn.ctl, a path
        # shared with any other gunicorn on the machine (a `make run` in progress).
        self.process = ManagedProcess(
            "gunicorn", web_command("--no-control-socket"), env, self.log_path
        ).start()
        url = f"http://127.0.0.1:{self.port}/readyz"
        deadline = time.monotonic() + deadline_s
        last = "no answer"
        migrations_retried = 0
        while time.monotonic() < deadline:
            if not self.process.alive:
                raise SystemExit(
                    f"gunicorn exited ({self.process.returncode}); see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                with contextlib.suppress(OSError):
                    last = f"{exc.code}: {exc.read()[:300].decode('utf-8', 'replace')}"
                if "pending" in last and migrations_retried < 3:
                    # The tree is shared: a migration may have landed since we migrated.
                    migrations_retried += 1
                    log(f"readyz says migrations are pending: migrating again ({last[:120]})")
                    manage(["migrate", "--no-input", "-v0"], self.env)
            except OSError as exc:
                last = str(exc)
            time.sleep(0.25)
        raise SystemExit(f"service not ready after {deadline_s:.0f}s ({last}); see {self.log_path}")

    def pids(self) -> list[int]:
        if self.process is None:
            return []
        return [self.process.pid, *child_pids(self.process.pid)]

    def new_log_problems(self) -> list[str]:
        """Log lines since the last call that look like trouble (errors, deadlocks, 5xx)."""
        text = self.log_path.read_bytes()[self.log_offset :].decode("utf-8", "replace")
        self.log_offset += len(text.encode("utf-8"))
        pattern = re.compile(
            r'"level": ?"(ERROR|CRITICAL)"|Traceback|deadlock|\[CRITICAL\]|\[ERROR\]|WORKER TIMEOUT'
            r'|"status": ?5\d\d',
            re.IGNORECASE,
        )
        return [line for line in text.splitlines() if pattern.search(line)]

    def stop(self) -> None:
        if self.process is not None:
            # SIGTERM to the master only (it drains its workers), then SIGKILL to any
            # orphaned worker of our group (never anything else).
            self.process.stop(15, whole_group=False)
        shutil.rmtree(self.prometheus_dir, ignore_errors=True)


class Children:
    """Short-lived subprocesses (loadgen, pgbench), killed with their group on exit."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def run(self, cmd: list[str], *, env: dict[str, str], timeout: float) -> tuple[int, str, str]:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.running.append(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            out, err = proc.communicate()
            err += f"\n[bench] killed after {timeout:.0f}s timeout"
        except BaseException:  # Ctrl-C, SIGTERM: the child must not outlive us
            self.kill(proc)
            proc.wait()
            raise
        finally:
            self.running.remove(proc)
        return proc.returncode, out, err

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def kill_all(self) -> None:
        for proc in list(self.running):
            self.kill(proc)


# --------------------------------------------------------------------------- phases


def loadgen_procs(concurrency: int, requested: int | None) -> int:
    """One process is enough here: measured at c=32 it used ~0.1 core for ~100 orders/s, and
    1 vs 2 processes gave the same throughput within noise (see README)."""
    return requested or 1


def run_service_phase(
    *,
    children: Children,
    service: Service,
    db: DbUrl,
    api_key: str,
    products: list[str],
    variant: str,
    concurrency: int,
    args: argparse.Namespace,
    run_tag: str,
) -> dict:
    procs = loadgen_procs(concurrency, args.loadgen_procs)
    cmd = [
        str(PYTHON),
        str(BENCH_DIR / "loadgen.py"),
        "--url",
        f"http://127.0.0.1:{service.port}/api/v1/orders/",
        "--products",
        ",".join(products),
        "--variant",
        variant,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--procs",
        str(procs),
        "--run-tag",
        f"{run_tag}-{variant}-{concurrency}",
    ]
    env = os.environ | {"BENCH_API_KEY": api_key}
    before = CpuSample.take(server_pids=service.pids(), postgres_pids=bench_backend_pids(db))
    code, out, err = children.run(cmd, env=env, timeout=args.duration + args.warmup + 120)
    after = CpuSample.take(server_pids=service.pids(), postgres_pids=bench_backend_pids(db))
    if code != 0:
        raise SystemExit(f"loadgen failed ({code}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["cpu"] = cpu_split(before, after)
    problems = service.new_log_problems()
    result["log_problems"] = len(problems)
    result["log_problem_samples"] = problems[:5]
    return result


def run_pgbench_phase(
    *,
    children: Children,
    pgbench: str,
    db: DbUrl,
    client_id: str,
    products: list[Product],
    variant: str,
    script_name: str,
    concurrency: int,
    duration: float,
) -> dict:
    script = BENCH_DIR / script_name
    defines = [f"client_id={client_id}"]
    if variant == "spread":  # the script draws its products itself
        defines.append(f"price={SPREAD_PRICE}")
    else:
        for n, product in enumerate(products, start=1):
            defines += [f"p{n}={product.id}", f"sku{n}={product.sku}", f"price{n}={product.price}"]
    cmd = [
        pgbench,
        "-h",
        db.host,
        "-p",
        str(db.port),
        "-U",
        db.user,
        "-n",
        "-c",
        str(concurrency),
        "-j",
        str(min(concurrency, 2)),
        "-T",
        str(int(duration)),
        "-f",
        str(script),
        *[arg for d in defines for arg in ("-D", d)],
    ]
    env = os.environ | ({"PGPASSWORD": db.password} if db.password else {})
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as log_dir:
        # Every transaction's latency (one file per pgbench thread): a true p99, not a mean.
        cmd += ["--log", f"--log-prefix={log_dir}/tx", db.name]
        before = CpuSample.take(server_pids=[], postgres_pids=[])
        code, out, err = children.run(cmd, env=env, timeout=duration + 120)
        after = CpuSample.take(server_pids=[], postgres_pids=[])
        latencies = pgbench_latencies_ms(Path(log_dir))
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    latency = re.search(r"latency average = ([\d.]+) ms", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    if code != 0 or not tps:
        log(f"pgbench failed ({code}):\n{err[-2000:]}")
    return {
        "script": script_name,
        "tps": float(tps.group(1)) if tps else None,
        "latency_avg_ms": float(latency.group(1)) if latency else None,
        "p50_ms": _round(percentile(latencies, 0.50)),
        "p99_ms": _round(percentile(latencies, 0.99)),
        "max_ms": _round(latencies[-1] if latencies else None),
        "logged_transactions": len(latencies),
        "transactions": int(processed.group(1)) if processed else None,
        "failed": int(failed.group(1)) if failed else None,
        "exit_code": code,
        "stderr_tail": err.strip()[-500:] if code != 0 else "",
        "cpu": cpu_split(before, after),
    }


def pgbench_latencies_ms(log_dir: Path) -> list[float]:
    """Sorted latencies (ms) of the transactions pgbench logged with --log: lines are
    `client tx_no latency_us script_no epoch_s epoch_us`; failed or skipped ones (a word in
    place of the latency) are left out: the failure count says how many."""
    latencies = []
    for path in log_dir.iterdir():
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():
                latencies.append(int(fields[2]) / 1000)
    return sorted(latencies)


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile, the same as bench/loadgen.py's for the service."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 4) if numerator is not None and denominator else None


def compare(row: dict) -> None:
    """The row's ratios: service ÷ each pgbench floor (throughput and p99 latency)."""
    service = row["service"]
    for name, suffix in (("pgbench", ""), ("pgbench_best", "_best")):
        floor = row.get(name) or {}
        row[f"ratio{suffix}"] = _ratio(service["orders_per_s"], floor.get("tps"))
        row[f"p99_ratio{suffix}"] = _ratio(service["p99_ms"], floor.get("p99_ms"))


# --------------------------------------------------------------------------- report


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _floor_cells(row: dict, name: str, suffix: str) -> str:
    """tps, p99, ratio and p99 ratio of one pgbench floor ("FAILED" when its run failed)."""
    floor = row.get(name) or {}
    tps = "FAILED" if floor and floor.get("tps") is None else _fmt(floor.get("tps"), ".1f")
    return (
        f" {tps:>8} {_fmt(floor.get('p99_ms'), '.1f'):>7}"
        f" {_fmt(row.get(f'ratio{suffix}'), '.3f'):>6}"
        f" {_fmt(row.get(f'p99_ratio{suffix}'), '.2f'):>6}"
    )


def format_table(rows: list[dict]) -> str:
    floor_header = f" {'tps':>8} {'p99 ms':>7} {'ratio':>6} {'p99 x':>6}"
    header = (
        f"{'variant':<8} {'conc':>4} {'orders/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
        f" |{floor_header} |{floor_header} | {'lg ms/o':>7}"
        f"   {'service-run CPU %: gunicorn/pg/loadgen/other'}"
    )
    over = f"{'service':^48}|{'pgbench (today)':^30}|{'pgbench best shape':^30}|"
    lines = [over, header, "-" * len(header)]
    for row in rows:
        s = row["service"]
        cpu = s["cpu"]
        lines.append(
            f"{row['variant']:<8} {row['concurrency']:>4} {s['orders_per_s']:>9.1f}"
            f" {_fmt(s['p50_ms'], '.1f'):>8} {_fmt(s['p99_ms'], '.1f'):>8} {s['errors']:>6}"
            f" |{_floor_cells(row, 'pgbench', '')} |{_floor_cells(row, 'pgbench_best', '_best')}"
            f" | {_fmt(s.get('loadgen_cpu_ms_per_order'), '.2f'):>7}"
            f"   {cpu['gunicorn_pct']}/{cpu['postgres_pct']}/{cpu['client_pct']}"
            f"/{cpu['other_pct']} (machine {cpu['machine_pct']}%)"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cores = core_count()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    parser.add_argument(
        "--variants",
        default="normal,hot",
        help="comma-separated: normal (2 fixed products), hot (1 product), spread (2 of 100)",
    )
    add_server_args(
        parser, database_env="BENCH_DATABASE_URL", database_default=DEFAULT_DATABASE_URL
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WEB_CONCURRENCY") or max(4, 2 * cores)),
        help="gunicorn workers (default: $WEB_CONCURRENCY, else max(4, 2 x cores))",
    )
    parser.add_argument(
        "--loadgen-procs",
        type=int,
        default=None,
        help="loadgen processes to spread the threads over (default: 1)",
    )
    parser.add_argument("--skip-pgbench", action="store_true")
    args = parser.parse_args(argv)
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(args.variant_list) - set(VARIANTS):
        parser.error(f"--variants takes some of {', '.join(VARIANTS)}")
    args.cores = cores
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = utc_stamp()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    db = DbUrl.parse(args.database_url, default_name="orders_bench")
    # Without pgbench the service half still runs (--skip-pgbench needs no pgbench at all).
    pgbench, pgbench_origin, pgbench_version = "", "", ""
    if not args.skip_pgbench:
        pgbench, pgbench_origin = find_pgbench()
        pgbench_version = subprocess.run(
            [pgbench, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    run_tag = secrets.token_hex(4)

    env = os.environ | {
        "DATABASE_URL": db.url,
        "REDIS_URL": args.redis_url,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "ORDER_RATE_LIMIT": RAISED_RATE,
        "API_RATE_LIMIT": RAISED_RATE,
        # Own key prefixes in the shared Redis; every key has a TTL, nothing is flushed.
        "RATE_LIMIT_KEY_PREFIX": f"orders-bench:{run_tag}:rl",
        "CACHE_KEY_PREFIX": f"orders-bench:{run_tag}",
        # Every committed order nudges Celery (payment steps, outbox relay). Keep those
        # messages out of the shared `orders` queue: a private queue, deleted at the end.
        "CELERY_QUEUE": celery_queue(run_tag),
        "WEB_CONCURRENCY": str(args.workers),
        "WEB_GRACEFUL_TIMEOUT": "5",
        "PYTHONUNBUFFERED": "1",
    }
    header = {
        "timestamp": stamp,
        "cores": args.cores,
        "gunicorn_workers": args.workers,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "database": f"{db.host}:{db.port}/{db.name}",
        "pgbench": (
            f"{pgbench} ({pgbench_origin}; {pgbench_version})" if pgbench else "--skip-pgbench"
        ),
        "python": platform.python_version(),
        "git": git_revision(),
        "load_average_at_start": os.getloadavg(),
    }
    print(
        f"orders benchmark {stamp}: {args.cores} CPU cores (client, server, PostgreSQL and "
        f"Redis share them), gunicorn workers={args.workers}, duration={args.duration:g}s "
        f"+ warm-up {args.warmup:g}s, git {header['git']}",
        flush=True,
    )
    print(f"pgbench: {header['pgbench']}", flush=True)

    children = Children()
    service = Service(
        env=env, port=free_port(), log_path=RESULTS_DIR / f"orders-{stamp}-gunicorn.log"
    )

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: a shell starting us in the background leaves it ignored otherwise.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    rows: list[dict] = []
    try:
        prepare_database(db, env)
        products = upsert_products(db)
        api_key = manage(["create_api_client", f"bench-{stamp}-{run_tag}"], env).strip()
        with db.connect() as conn:
            client_id = conn.execute(
                "SELECT id::text FROM orders_apiclient WHERE name = %s",
                [f"bench-{stamp}-{run_tag}"],
            ).fetchone()[0]
        log(f"starting gunicorn on port {service.port} ({args.workers} workers)")
        service.start()
        service.new_log_problems()  # startup noise (e.g. the staticfiles warning) is not load
        for variant in args.variant_list:
            chosen = {
                "normal": [products["BENCH-A"], products["BENCH-B"]],
                "hot": [products["BENCH-HOT"]],
                "spread": [products[f"BENCH-S-{n}"] for n in SPREAD_RANGE],
            }[variant]
            for concurrency in args.levels:
                log(f"service: {variant} c={concurrency}")
                result = run_service_phase(
                    children=children,
                    service=service,
                    db=db,
                    api_key=api_key,
                    products=[p.id for p in chosen],
                    variant=variant,
                    concurrency=concurrency,
                    args=args,
                    run_tag=run_tag,
                )
                row = {"variant": variant, "concurrency": concurrency, "service": result}
                if not args.skip_pgbench:
                    for name, scripts in (("pgbench", SCRIPTS), ("pgbench_best", BEST_SCRIPTS)):
                        log(f"{name}: {variant} c={concurrency} ({scripts[variant]})")
                        row[name] = run_pgbench_phase(
                            children=children,
                            pgbench=pgbench,
                            db=db,
                            client_id=client_id,
                            products=sorted(chosen, key=lambda p: p.id),
                            variant=variant,
                            script_name=scripts[variant],
                            concurrency=concurrency,
                            duration=args.duration,
                        )
                    compare(row)
                rows.append(row)
                if result["errors"] or result["log_problems"]:
                    log(
                        f"  {result['errors']} non-201 responses {result['statuses']}, "
                        f"{result['log_problems']} suspicious log lines; samples: "
                        f"{result['error_samples'][:2]} {result['log_problem_samples'][:2]}"
                    )
    except KeyboardInterrupt:
        log("interrupted: stopping what this run started")
        return 130
    finally:
        children.kill_all()
        service.stop()
        redis_cleanup(args.redis_url, run_tag)

    print()
    print(format_table(rows))
    print(
        "\npgbench (today) = bench/pgbench_order*.sql, the statement shapes the service sent "
        "when the bench was written; pgbench best shape = bench/pgbench_order*_best.sql, the "
        "same work in one round trip with the product locks taken last. tps and p99 ms per "
        "floor (p99 over every transaction pgbench logged with --log); ratio = service "
        "orders/s / that floor's tps; p99 x = service p99 / that floor's p99. lg ms/o = ms of "
        "load-generator CPU per successful order (its load loop, warm-up included). CPU % = "
        f"percent of one core during the service run (max {100 * args.cores}%): gunicorn "
        "workers, PostgreSQL backends of the bench database, the loadgen, and the rest "
        "(Redis, other PostgreSQL processes, anything else running on the machine)"
    )
    out_path = RESULTS_DIR / f"orders-{stamp}.json"
    write_json(out_path, {"header": header, "rows": rows})
    print(f"results: {shown_path(out_path)}  gunicorn log: {shown_path(service.log_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
