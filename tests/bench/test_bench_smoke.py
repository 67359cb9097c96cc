"""Every bench in bench/ runs in CI with its smallest parameters, so a refactor that breaks
one fails the suite instead of the next person who wants figures (issue 10 item 7).

Each bench runs as a subprocess, as a person would start it, with its own private database
(created and migrated by the bench, dropped afterwards), the shared Redis under names of its
own, and its result files in the test's temporary directory ($BENCH_RESULTS_DIR). A run
passes when it exits 0 and printed its figures. The fault drill runs in tests/drills
already; here only its command line is checked. bench/loadgen.py needs a running service:
orders_bench drives it on every run, and its figures are the ones checked there.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
from django.conf import settings

from scripts.processes import database_url
from tests.polling import eventually

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"

pytestmark = pytest.mark.slow

# bench/ files that are not benches.
NOT_BENCHES = {"common.py", "__init__.py"}
# Every bench and the test below that runs it; a new bench needs a smoke run here too.
SMOKE_RUNS = {
    "orders_bench.py": "test_orders_bench_smoke",
    "relay_orders_load.py": "test_relay_orders_load_smoke",
    "relay_bench.py": "test_relay_bench_smoke",
    "order_list_bench.py": "test_order_list_bench_smoke",
    "order_cpu_profile.py": "test_order_cpu_profile_smoke",
    "seed_scale.py": "test_seed_scale_smoke",
    "loadgen.py": "test_command_line_of_benches_run_elsewhere",
    "fault_drill.py": "test_command_line_of_benches_run_elsewhere",
}


# --- running a bench ---------------------------------------------------------------------


def bench_env(results_dir: Path, **extra: str) -> dict[str, str]:
    """This process's environment minus what pytest-django set for itself (the benches
    choose their settings module and database), results into `results_dir`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")
        and not name.startswith("PYTEST_")
    }
    return env | {"BENCH_RESULTS_DIR": str(results_dir), "PYTHONUNBUFFERED": "1"} | extra


def run_bench(script: str, *args: str, env: dict[str, str], log: Path, timeout: float) -> str:
    """Run bench/<script> to its end; returns its output (stdout and stderr). Fails the test
    with the output's tail when it exits non-zero or hangs: silent for longer than
    `timeout` (scaled by the machine's slowness) while its output no longer grows."""
    with log.open("wb") as out:
        bench = subprocess.Popen(
            [sys.executable, str(BENCH / script), *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output() -> str:
        return log.read_text(errors="replace")

    try:
        eventually(
            lambda: bench.poll() is not None,
            timeout=timeout,
            what=f"bench/{script} to finish",
            interval=0.5,
            progress=lambda: log.stat().st_size,
        )
    except AssertionError as exc:
        stop(bench)
        pytest.fail(f"{exc}\n{output()[-6000:]}")
    assert bench.returncode == 0, f"bench/{script} exited {bench.returncode}:\n{output()[-6000:]}"
    print(output())  # shown with -rP: the figures of this run
    return output()


def stop(bench: subprocess.Popen) -> None:
    """SIGTERM (the benches stop what they started on it), then SIGKILL to its group."""
    bench.send_signal(signal.SIGTERM)
    try:
        bench.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(bench.pid, signal.SIGKILL)
        bench.wait()


def figures(pattern: str, output: str) -> re.Match:
    found = re.search(pattern, output, flags=re.MULTILINE)
    assert found, f"no figures matching {pattern!r} in:\n{output[-4000:]}"
    return found


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def private_database() -> str:
    """URL of a database no one else uses (the bench creates and migrates it), dropped
    afterwards."""
    base = settings.DATABASES["default"]
    name = f"{base['NAME']}_bench_{uuid.uuid4().hex[:8]}"[-63:]
    yield database_url({**base, "NAME": name})
    drop_database(name)


def drop_database(name: str) -> None:
    base = settings.DATABASES["default"]
    with psycopg.connect(
        host=base["HOST"] or "127.0.0.1",
        port=base["PORT"] or 5432,
        user=base["USER"] or None,
        password=base["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    ) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def results_dir(tmp_path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def private_queue():
    """A Celery queue name nobody consumes; its keys are deleted afterwards (only its own)."""
    name = f"bench-smoke-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"*{name}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# --- the smoke runs ----------------------------------------------------------------------


def pgbench_args() -> list[str]:
    """pgbench as the bench finds it (PATH, else the pgserver wheel), else --skip-pgbench:
    the service half of the bench is checked either way."""
    from bench.orders_bench import find_pgbench

    try:
        find_pgbench()
    except SystemExit:
        return ["--skip-pgbench"]
    return []


def floor_cells(name: str) -> str:
    """One pgbench floor's cells of the orders table: tps ("FAILED" or "-" without a run),
    p99 ms, ratio, p99 ratio ("-" when there is nothing to divide by)."""
    figure = r"(?:\d+\.\d+|-)"
    return (
        rf"\|\s+(?P<{name}_tps>\d+\.\d|FAILED|-)\s+(?P<{name}_p99>{figure})"
        rf"\s+(?P<{name}_ratio>{figure})\s+(?P<{name}_p99_ratio>{figure})\s+"
    )


def orders_row(variant: str, output: str) -> re.Match:
    """The orders benchmark's table row of `variant` at concurrency 2."""
    return figures(
        rf"^{variant}\s+2\s+(?P<orders_per_s>\d+\.\d)\s+(?P<p50>\d+\.\d)\s+(?P<p99>\d+\.\d)"
        rf"\s+(?P<errors>\d+)\s+{floor_cells('pgbench')}{floor_cells('best')}"
        r"\|\s+(?P<loadgen_ms_per_order>\d+\.\d\d)\s+\d+/\d+/\d+/\d+ \(machine",
        output,
    )


SMALLEST_ORDER_LOAD = ["--duration", "1", "--warmup", "0.5", "--concurrency", "2", "--workers", "2"]
VARIANTS = ("normal", "hot", "spread")


def test_orders_bench_smoke(private_database, results_dir, tmp_path):
    # given the orders benchmark at its smallest: 1 s of load at concurrency 2 per variant,
    # so each of its pgbench scripts runs against the schema as migrated today
    args = [*SMALLEST_ORDER_LOAD, "--variants", ",".join(VARIANTS), *pgbench_args()]
    args += ["--database-url", private_database, "--redis-url", settings.REDIS_URL]

    # when it runs
    output = run_bench(
        "orders_bench.py",
        *args,
        env=bench_env(results_dir),
        log=tmp_path / "orders_bench.log",
        timeout=90,
    )

    # then it printed a row per variant: orders placed without an error, the load generator's
    # CPU per order, and both pgbench floors beside them (today's script and the best shape:
    # tps, p99 and the ratios; "FAILED" when a script no longer fits the schema)
    for variant in VARIANTS:
        row = orders_row(variant, output)
        assert float(row["orders_per_s"]) > 0, row[0]
        assert row["errors"] == "0", row[0]
        assert float(row["loadgen_ms_per_order"]) > 0, row[0]
        for floor in ("pgbench", "best"):  # today's script, then the best shape
            cells = [row[f"{floor}_{name}"] for name in ("tps", "p99", "ratio", "p99_ratio")]
            if "--skip-pgbench" in args:
                assert cells == ["-"] * 4, row[0]
            else:
                assert cells[0] != "FAILED", f"{variant} {floor}: pgbench failed, see the JSON"
                assert all(float(cell) > 0 for cell in cells), row[0]
    assert list(results_dir.glob("orders-*.json"))


def test_relay_orders_load_smoke(private_database, private_queue, results_dir, tmp_path):
    # given the orders benchmark as the relay bench's lag phase drives it: its service
    # nudging a Celery queue named from outside, pgbench skipped
    args = [*SMALLEST_ORDER_LOAD, "--variants", "normal", "--skip-pgbench"]
    args += ["--database-url", private_database, "--redis-url", settings.REDIS_URL]

    # when it runs
    output = run_bench(
        "relay_orders_load.py",
        *args,
        env=bench_env(results_dir, RELAY_BENCH_CELERY_QUEUE=private_queue),
        log=tmp_path / "relay_orders_load.log",
        timeout=90,
    )

    # then the orders benchmark ran (not exit 3, "not usable this way") and printed its row
    row = orders_row("normal", output)
    assert float(row["orders_per_s"]) > 0, row[0]
    assert row["errors"] == "0", row[0]


def test_relay_bench_smoke(private_database, results_dir, tmp_path):
    # given the relay benchmark at its smallest: 300 events, one worker process, and 1 s of
    # order load for the lag phase
    args = ["--events", "300", "--workers", "1", "--lag-duration", "1"]
    args += ["--lag-concurrency", "2", "--database-url", private_database]
    args += ["--redis-url", settings.REDIS_URL]

    # when it runs
    output = run_bench(
        "relay_bench.py",
        *args,
        env=bench_env(results_dir),
        log=tmp_path / "relay_bench.log",
        timeout=120,
    )

    # then every phase printed its figures: throughput (verified), raw XADD and the lag
    figures(r"^relay, 1 worker proc: start → drained\s+300\s+\d+\.\d\s.*verify OK$", output)
    figures(r"^relay, 1 worker proc: first → last entry\s+300\s+\d+\.\d\s", output)
    figures(r"^raw XADD, redis-py pipeline of 200\s+300\s+\d+\.\d\s", output)
    lag = figures(r"^\s+from created_at:\s+(?P<events>\d+) events\s+p50 \d+\.\d ms", output)
    assert int(lag["events"]) > 0
    assert "driving orders myself" not in output, "the lag phase lost bench/orders_bench.py"


def test_order_list_bench_smoke(private_database, tmp_path):
    # given the order-list benchmark in its CI size (--smoke: 20 orders, 5 requests)
    args = ["--smoke", "--database-url", private_database, "--redis-url", settings.REDIS_URL]

    # when it runs
    output = run_bench(
        "order_list_bench.py",
        *args,
        env=bench_env(tmp_path / "results"),
        log=tmp_path / "order_list_bench.log",
        timeout=90,
    )

    # then it printed its figures for a page of those 20 orders
    figures(
        r"^GET /api/v1/orders/\?page_size=\d+: 20 orders \(\d+ with a payment\), "
        r"\d+ queries/request, p50 \d+\.\d ms",
        output,
    )


def cpu_columns(label: str, output: str) -> tuple[float, float]:
    """The before and after figures of one row of the CPU profile's table."""
    row = figures(rf"^{re.escape(label)}\s+(\d+\.\d+)\s+(\d+\.\d+)\s+[+-]\d+\.\d+$", output)
    return float(row[1]), float(row[2])


def test_order_cpu_profile_smoke(private_database, results_dir, tmp_path):
    # given the CPU profile at its smallest: 20 orders per mode (60 under the sampler), both
    # modes (the locking path, then one round trip)
    args = ["--orders", "20", "--warmup", "3", "--top", "5"]
    args += ["--database-url", private_database, "--redis-url", settings.REDIS_URL]

    # when it runs
    output = run_bench(
        "order_cpu_profile.py",
        *args,
        env=bench_env(results_dir),
        log=tmp_path / "order_cpu_profile.log",
        timeout=120,
    )

    # then each mode's layers are figures with their sampling error, and they add up to the
    # service's CPU per order, which is within the process's CPU and plausible
    from bench.order_cpu_profile import LAYERS

    layer_row = r"^(\S.*?)\s+(\d+\.\d\d) ±\d+\.\d\d\s+(\d+\.\d\d) ±\d+\.\d\d\s+[+-]\d+\.\d\d$"
    layers = re.findall(layer_row, output, flags=re.MULTILINE)
    assert [label for label, _, _ in layers] == [
        label for key, label in LAYERS if key != "harness"
    ], output[-4000:]
    service = cpu_columns("service, main thread (sum of the layers)", output)
    process = cpu_columns("process CPU (un-profiled, process_time)", output)
    for column in (0, 1):
        layer_sum = sum(float(row[1 + column]) for row in layers)
        assert abs(layer_sum - service[column]) <= 0.005 * len(layers) + 0.01, output[-4000:]
        assert 0 < service[column] <= process[column] < 1000, (service, process)
        database = [float(row[1 + column]) for row in layers if row[0].startswith(("Django", "DB"))]
        assert sum(database) > 0, layers
    # ... the switch took effect (the locking path makes more round trips), and the JSON and
    # both profiles were written
    before, after = cpu_columns("PostgreSQL round trips (libpq trace)", output)
    assert 0 < after < before
    figures(r"^top 5 functions by self time under cProfile, after ", output)
    assert len(list(results_dir.glob("order-cpu-*.json"))) == 1
    assert len(list(results_dir.glob("order-cpu-*.prof"))) == 2


def test_seed_scale_smoke(private_database, tmp_path):
    # given the data-scale benchmark in its CI size (--smoke: 2 000 vs 200 orders by COPY),
    # its small database beside the private one
    baseline = f"{private_database}_small"
    args = ["--smoke", "--database-url", private_database, "--baseline-database-url", baseline]

    # when it runs
    try:
        output = run_bench(
            "seed_scale.py",
            *args,
            "--redis-url",
            settings.REDIS_URL,
            env=bench_env(tmp_path / "results"),
            log=tmp_path / "seed_scale.log",
            timeout=90,
        )
    finally:
        drop_database(baseline.rsplit("/", 1)[1])

    # then it timed every admin page and API request at both sizes, with their ratio...
    for page in (
        "admin changelist",
        r"admin \?status__exact=paid",
        r"admin \?q=<email>",
        "admin operations page",
        "admin products",
        "admin outbox events",
        "API orders, first page",
        "API POST order",
    ):
        figures(
            rf"^{page}\s+\d+/\d+\s+\d+\.\d ms\s+\d+\.\d ms\s+\d+\.\d\d\s+\d+\.\d\d  (ok|OVER)$",
            output,
        )
    figures(r"^rollup refresh \(beat, 1/min\).* background$", output)
    # ...and explained every admin query, into the results folder
    figures(r"^\s+(Limit|Sort|Aggregate|HashAggregate|Unique|Nested Loop|Index)", output)
    explained = (tmp_path / "results" / "admin_scale_explain.txt").read_text()
    assert "## admin operations page: 2,0" in explained
    assert "Buffers: shared" in explained


@pytest.mark.parametrize("script", ["fault_drill.py", "loadgen.py"])
def test_command_line_of_benches_run_elsewhere(script, tmp_path):
    # given a bench that runs in another test (the drill in tests/drills, the load
    # generator under orders_bench)
    # when it is asked for its usage
    output = run_bench(
        script, "--help", env=bench_env(tmp_path), log=tmp_path / "help.log", timeout=30
    )

    # then it imports and parses its arguments
    figures(rf"^usage: {re.escape(script)} .*--duration", output.replace("\n", " "))


def test_every_bench_has_a_smoke_run():
    # given the scripts in bench/
    benches = {path.name for path in BENCH.glob("*.py")} - NOT_BENCHES

    # then each has a smoke run in this module, and each named smoke run exists
    assert benches == set(SMOKE_RUNS), "add a smoke run (and an entry in SMOKE_RUNS)"
    assert all(callable(globals().get(test)) for test in SMOKE_RUNS.values())
