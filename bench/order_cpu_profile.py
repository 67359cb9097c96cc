"""Python CPU per POST /api/v1/orders/, by layer, before/after (see bench/README.md).

    .venv/bin/python bench/order_cpu_profile.py [--orders 300] [--one-round-trip on|off]
        [--sampled-orders 900] [--top 15] [--log-level WARNING]
        [--database-url postgres://...] [--redis-url redis://...]

Creates orders in this process through the service's own WSGI application (every
middleware, DRF, PostgreSQL and Redis; no gunicorn, no network client), after a warm-up,
three times per mode: without a profiler, timed with time.process_time (CPU, far less
sensitive than wall time to other work on a shared machine); under a CPU-time sampler
(SIGPROF), whose samples, counted per layer by the innermost frame's module (standard-
library and helper functions count for the layer that called them), split that CPU into
layers; and under cProfile with a CPU clock, for exact call counts and the top functions by
self time (scaled to the un-profiled CPU: cProfile's bookkeeping triples what it measures).
"before" is the locking path (ORDER_CREATE_ONE_ROUND_TRIP=0), "after" the one-round-trip
unit of work, in one process.

Its own database (`orders_cpuprofile` by default, created and migrated; its order tables
are emptied before a run only if this script created it), Redis names of its own (deleted
at the end, never a FLUSH). Prints a table and writes bench/results/order-cpu-<ts>.json
and the two cProfile profiles beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import math
import os
import platform
import pstats
import random
import re
import secrets
import shutil
import signal
import sys
import sysconfig
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402 - after the path set-up
    RAISED_RATE,
    RESULTS_DIR,
    DbUrl,
    add_server_args,
    core_count,
    create_and_migrate,
    git_revision,
    make_log,
    shown_path,
    utc_stamp,
    write_json,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/orders_cpuprofile"
DB_MARKER = "orders_cpuprofile: created by bench/order_cpu_profile.py; emptied before every run"
HUGE_STOCK = 2_000_000_000
PRODUCTS = {"CPU-A": ("CPU profile product A", "12.50"), "CPU-B": ("CPU profile product B", "3.10")}
MODES = {"off": "before", "on": "after"}  # --one-round-trip value: column
ORDERS_PATH = "/api/v1/orders/"
# Orders per mode and turn in the un-profiled pass: the modes take turns, so a change in
# the machine's load meanwhile falls on both.
TURNS = 5

log = make_log("cpu-profile")


# --------------------------------------------------------------------------- layers

# (key, label) in the table's order. "harness" is this script, not the service.
LAYERS = [
    ("wsgi", "WSGI + Django request/response, URL resolving"),
    ("mw_request_id", "middleware: core.request_id"),
    ("mw_problems", "middleware: core.problems"),
    ("mw_input_guard", "middleware: core.input_guard"),
    ("mw_rate_headers", "middleware: core.ratelimit headers"),
    ("mw_api_paths", "middleware: core.api_middleware"),
    ("mw_django", "middleware: Django's (security, common, csrf), whitenoise"),
    ("mw_prometheus", "middleware: prometheus (django_prometheus + ours)"),
    ("drf_view", "DRF: dispatch, request, response, negotiation"),
    ("drf_parse", "DRF: parsing (JSONParser, core.parsers)"),
    ("drf_auth", "DRF: authentication, permissions, throttling"),
    ("drf_fields", "DRF: serializers + fields"),
    ("drf_render", "DRF: rendering (JSONRenderer)"),
    ("serializers", "ours: serializers/validation (orders/api/serializers)"),
    ("view", "ours: view (orders/api/views.py)"),
    ("idempotency", "ours: idempotency (orders[/api]/idempotency.py)"),
    ("ratelimit", "ours: rate limiting (core/ratelimit.py)"),
    ("api_key", "ours: API-key auth (clients/, core/invalidated_cache)"),
    ("svc_orders", "ours: orders services (services, history, events)"),
    ("svc_catalog", "ours: catalog (selectors, stock take)"),
    ("svc_outbox", "ours: outbox + payments rows (enqueue, subscribers)"),
    ("unit_of_work", "ours: unit of work (core/unit_of_work.py)"),
    ("orm", "Django ORM (django.db.models: queries, compilers, fields)"),
    ("db_backend", "Django DB backend + transactions (+ core.db_engine)"),
    ("psycopg", "DB driver (psycopg), its waits' CPU included"),
    ("redis", "Redis client (redis-py, django-redis)"),
    ("prometheus", "metrics: prometheus_client writes"),
    ("metrics", "metrics: core.db_metrics, core.metrics, django_prometheus"),
    ("logging", "logging (logging, core.logging)"),
    ("nudges", "nudges (core/nudge.py, celery + kombu send)"),
    ("other", "other libraries"),
    ("unattributed", "stdlib/builtins called from nowhere above"),
    ("harness", "bench harness (this script; not the service)"),
]
LABELS = dict(LAYERS)
# A function matches the first rule whose path prefix (and function-name prefix: a code
# object's co_name, which is all cProfile records, so no class names) fit.
# Paths are relative to site-packages or the repository; "stdlib:" marks the standard
# library and "~" builtins. TRANSPARENT ones have no layer: their self time goes to the
# layers of their callers, in proportion to each caller's share of their time.
TRANSPARENT = "transparent"
RULES: list[tuple[str, str | None, str]] = [
    ("bench/", None, "harness"),
    ("stdlib:logging/", None, "logging"),
    ("stdlib:", None, TRANSPARENT),
    ("core/request_id.py", "filter", "logging"),  # RequestIdLogFilter.filter
    ("core/request_id.py", None, "mw_request_id"),
    ("core/logging.py", None, "logging"),
    ("core/problems.py", None, "mw_problems"),
    ("core/input_guard.py", None, "mw_input_guard"),
    ("core/ratelimit.py", "__call__", "mw_rate_headers"),  # RateLimitHeadersMiddleware
    ("core/ratelimit.py", None, "ratelimit"),
    ("core/env.py", "parse_rate", "ratelimit"),  # at request time only the limiter parses
    ("core/api_middleware.py", None, "mw_api_paths"),
    ("core/prometheus_middleware.py", None, "mw_prometheus"),
    ("core/wsgi_body.py", None, "wsgi"),
    ("core/parsers.py", None, "drf_parse"),
    ("core/unit_of_work.py", None, "unit_of_work"),
    ("core/db_engine/", None, "db_backend"),
    ("core/db_metrics.py", None, "metrics"),
    ("core/metrics.py", None, "metrics"),
    ("core/nudge.py", None, "nudges"),
    ("core/invalidated_cache.py", None, "api_key"),
    ("core/", None, TRANSPARENT),  # breaker, client_address, env: helpers of the callers
    ("outbox/nudge.py", None, "nudges"),
    ("payments/nudge.py", None, "nudges"),
    ("clients/", None, "api_key"),
    ("orders/api/serializers.py", None, "serializers"),
    ("orders/api/views.py", None, "view"),
    ("orders/api/idempotency.py", None, "idempotency"),
    ("orders/idempotency.py", None, "idempotency"),
    ("orders/", None, "svc_orders"),
    ("catalog/", None, "svc_catalog"),
    ("outbox/", None, "svc_outbox"),
    ("payments/", None, "svc_outbox"),
    ("orders_project/", None, "wsgi"),
    ("django/core/handlers/", None, "wsgi"),
    ("django/core/wsgi.py", None, "wsgi"),
    ("django/http/", None, "wsgi"),
    ("django/urls/", None, "wsgi"),
    ("django/middleware/", None, "mw_django"),
    ("whitenoise/", None, "mw_django"),
    ("django/db/models/", None, "orm"),
    ("django/db/", None, "db_backend"),
    ("django/views/", None, "wsgi"),
    ("django_prometheus/middleware.py", None, "mw_prometheus"),
    ("django_prometheus/utils.py", None, "mw_prometheus"),
    ("django_prometheus/", None, "metrics"),
    ("django/", None, TRANSPARENT),  # utils, dispatch, conf, validators: for the callers
    ("asgiref/", None, TRANSPARENT),
    ("typing_extensions", None, TRANSPARENT),
    ("rest_framework/request.py", "_parse", "drf_parse"),
    ("rest_framework/request.py", "_load_data_and_files", "drf_parse"),
    ("rest_framework/request.py", "data", "drf_parse"),
    ("rest_framework/request.py", "_authenticate", "drf_auth"),
    ("rest_framework/request.py", "user", "drf_auth"),
    ("rest_framework/request.py", "_not_authenticated", "drf_auth"),
    ("rest_framework/parsers.py", None, "drf_parse"),
    ("rest_framework/authentication.py", None, "drf_auth"),
    ("rest_framework/permissions.py", None, "drf_auth"),
    ("rest_framework/throttling.py", None, "drf_auth"),
    ("rest_framework/renderers.py", None, "drf_render"),
    ("rest_framework/utils/encoders.py", None, "drf_render"),
    ("rest_framework/utils/json.py", None, "drf_render"),
    ("rest_framework/serializers.py", None, "drf_fields"),
    ("rest_framework/fields.py", None, "drf_fields"),
    ("rest_framework/relations.py", None, "drf_fields"),
    ("rest_framework/validators.py", None, "drf_fields"),
    ("rest_framework/utils/serializer_helpers.py", None, "drf_fields"),
    ("rest_framework/utils/field_mapping.py", None, "drf_fields"),
    ("rest_framework/", None, "drf_view"),
    ("drf_spectacular/", None, "drf_view"),
    ("psycopg", None, "psycopg"),  # psycopg/, psycopg_binary/, psycopg_pool/
    ("redis/", None, "redis"),
    ("django_redis/", None, "redis"),
    ("hiredis", None, "redis"),
    ("prometheus_client/", None, "prometheus"),
    ("celery/", None, "nudges"),
    ("kombu/", None, "nudges"),
    ("vine/", None, "nudges"),
    ("amqp/", None, "nudges"),
    ("~", None, TRANSPARENT),
]
# Builtins (C functions) carry no file; a few name their extension module.
BUILTIN_HINTS = [("psycopg", "psycopg"), ("hiredis", "redis")]

Func = tuple[str, int, str]  # cProfile's (file name, line, function name)


def _path_roots() -> list[tuple[str, str]]:
    """(directory, prefix) to shorten code paths with, longest directory first."""
    paths = sysconfig.get_paths()
    roots = [(paths["purelib"], ""), (paths["platlib"], "")]
    roots += [(paths["stdlib"], "stdlib:"), (paths["platstdlib"], "stdlib:"), (str(ROOT), "")]
    return sorted(((os.path.realpath(d) + os.sep, p) for d, p in roots), key=lambda r: -len(r[0]))


_ROOTS = _path_roots()


def short_path(filename: str) -> str:
    if filename == "~":
        return "~"
    if filename.startswith("<frozen") or filename.startswith("<"):
        return "stdlib:" + filename
    real = os.path.realpath(filename)
    for directory, prefix in _ROOTS:
        if real.startswith(directory):
            return prefix + real[len(directory) :]
    return real


def layer_of(func: Func) -> str:
    """The layer a function's self time belongs to, or TRANSPARENT (its callers')."""
    filename, _, name = func
    path = short_path(filename)
    if path == "~":
        for hint, layer in BUILTIN_HINTS:
            if hint in name:
                return layer
        return TRANSPARENT
    for prefix, function, layer in RULES:
        if path.startswith(prefix) and (function is None or name.startswith(function)):
            return layer
    return "other"


@dataclass
class Attribution:
    """Self time per layer of a cProfile run, transparent functions' given to their callers."""

    stats: dict  # pstats' {func: (cc, nc, tt, ct, {caller: (nc, cc, tt, ct)})}
    owners: dict[Func, str] = field(default_factory=dict)
    _shares: dict[Func, dict[str, float]] = field(default_factory=dict)

    def layer_seconds(self) -> dict[str, float]:
        seconds: dict[str, float] = defaultdict(float)
        for func, (_, _, self_time, _, callers) in self.stats.items():
            for layer, fraction in self.self_time_shares(func, callers, self_time).items():
                seconds[layer] += self_time * fraction
        return dict(seconds)

    def self_time_shares(self, func: Func, callers: dict, self_time: float) -> dict[str, float]:
        """Where a function's own time goes: its layer, or its callers' by the time it spent
        (self) under each of them."""
        owner = self.owner(func)
        if owner != TRANSPARENT:
            return {owner: 1.0}
        shares = self._mix(callers, lambda edge: edge[2], visiting=frozenset({func}))
        return shares or {"unattributed": 1.0}

    def owner(self, func: Func) -> str:
        if func not in self.owners:
            self.owners[func] = layer_of(func)
        return self.owners[func]

    def caller_shares(self, func: Func, visiting: frozenset) -> dict[str, float]:
        """The layers a call of `func` is made for: its own, or (transparent) its callers' in
        proportion to the cumulative time spent under each (gprof's assumption)."""
        owner = self.owner(func)
        if owner != TRANSPARENT:
            return {owner: 1.0}
        if func not in self._shares:
            callers = self.stats[func][4] if func in self.stats else {}
            self._shares[func] = self._mix(callers, lambda edge: edge[3], visiting=visiting)
        return self._shares[func]

    def _mix(self, callers: dict, weight, *, visiting: frozenset) -> dict[str, float]:
        """The callers' layers, weighted by weight(edge). Calls from a function already being
        resolved (recursion, as in copy.deepcopy) are left out: they share its layers.
        Empty when no caller is left."""
        edges = [(caller, edge) for caller, edge in callers.items() if caller not in visiting]
        if sum(weight(edge) for _, edge in edges) <= 0:  # no time measured: by call counts
            weight = lambda edge: edge[0]  # noqa: E731
        mixed: dict[str, float] = defaultdict(float)
        for caller, edge in edges:
            for layer, fraction in self.caller_shares(caller, visiting | {caller}).items():
                mixed[layer] += weight(edge) * fraction
        total = sum(mixed.values())
        return {layer: value / total for layer, value in mixed.items()} if total > 0 else {}


def function_label(func: Func) -> str:
    filename, line, name = func
    path = short_path(filename)
    return name if path == "~" else f"{path}:{line}({name})"


# --------------------------------------------------------------------------- the service


def service_environment(args: argparse.Namespace, run_tag: str, prometheus_dir: str) -> dict:
    """Settings as orders_bench gives gunicorn: limits raised, Redis names of this run."""
    return {
        "DATABASE_URL": args.database_url,
        "REDIS_URL": args.redis_url,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "LOG_LEVEL": args.log_level,
        "ORDER_RATE_LIMIT": RAISED_RATE,
        "API_RATE_LIMIT": RAISED_RATE,
        "RATE_LIMIT_KEY_PREFIX": f"{redis_prefix(run_tag)}:rl",
        "CACHE_KEY_PREFIX": redis_prefix(run_tag),
        "CELERY_QUEUE": f"{redis_prefix(run_tag)}:celery",
        # As under gunicorn: every metric write goes to a per-process mmap file.
        "PROMETHEUS_MULTIPROC_DIR": prometheus_dir,
        "DJANGO_SETTINGS_MODULE": "orders_project.settings",
    }


def redis_prefix(run_tag: str) -> str:
    return f"order-cpu-profile:{run_tag}"


def prepare_database(db: DbUrl, env: dict[str, str]) -> None:
    """Create and migrate the database; empty its order tables if this script created it."""
    if create_and_migrate(db, env, marker=DB_MARKER, log=log, error=SystemExit):
        with db.connect() as conn:
            conn.execute(
                "TRUNCATE orders_idempotencyrecord, orders_orderitem, orders_order, "
                "outbox_outboxevent CASCADE"
            )
    else:
        log(f"database {db.name} was not created by this script: not emptying it")


def upsert_products(db: DbUrl) -> list[str]:
    """The two products every order takes (the `normal` variant of orders_bench), with
    stock that never runs out; their ids."""
    ids = []
    with db.connect() as conn:
        for sku, (name, price) in PRODUCTS.items():
            row = conn.execute(
                """
                INSERT INTO catalog_product
                    (id, sku, name, description, price, stock, is_active, created_at, updated_at)
                VALUES (gen_random_uuid(), %s, %s, '', %s, %s, true, now(), now())
                ON CONFLICT (sku) DO UPDATE
                    SET stock = EXCLUDED.stock, price = EXCLUDED.price, is_active = true
                RETURNING id::text
                """,
                [sku, name, price, HUGE_STOCK],
            ).fetchone()
            ids.append(row[0])
    return ids


def redis_cleanup(redis_url: str, run_tag: str) -> None:
    """Delete this run's keys (queue, nudge flags, rate-limit windows). Never a FLUSH."""
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        keys = list(client.scan_iter(match=f"*{redis_prefix(run_tag)}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()
    except Exception as exc:  # best effort: report, do not mask the run's outcome
        log(f"could not delete this run's Redis keys: {exc}")


class OrderPoster:
    """POST /api/v1/orders/ through the WSGI application gunicorn serves, as the load
    generator sends it (2 lines, random order, quantities 1-3, a new key and email each)."""

    def __init__(
        self, *, application: Callable, api_key: str, product_ids: list[str], run_tag: str
    ) -> None:
        from django.core.signals import got_request_exception

        self.application = application
        self.api_key = api_key
        self.product_ids = product_ids
        self.run_tag = run_tag
        self.sent = 0
        self.rng = random.Random(0)
        self.failure: BaseException | None = None
        # What the test client's raise_request_exception does: an exception the handler
        # turned into a 500 is raised here.
        got_request_exception.connect(self._remember_exception, weak=False)

    def _remember_exception(self, **kwargs) -> None:
        self.failure = sys.exc_info()[1]

    def post(self) -> None:
        self.sent += 1
        body = self._body()
        status, content = self._call(self._environ(body))
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        if not status.startswith("201"):
            raise SystemExit(f"order creation answered {status}: {content[:500]!r}")

    def _body(self) -> bytes:
        items = [
            {"product_id": product_id, "quantity": self.rng.randint(1, 3)}
            for product_id in self.product_ids
        ]
        self.rng.shuffle(items)
        email = f"cpu-{self.run_tag}-{self.sent}@example.com"
        return json.dumps({"email": email, "items": items}).encode()

    def _environ(self, body: bytes) -> dict:
        # The headers python-requests sends (bench/loadgen.py), as gunicorn passes them on.
        return {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": ORDERS_PATH,
            "QUERY_STRING": "",
            "RAW_URI": ORDERS_PATH,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "50000",
            "HTTP_HOST": "127.0.0.1:8000",
            "HTTP_USER_AGENT": "python-requests/2.32.3",
            "HTTP_ACCEPT_ENCODING": "gzip, deflate",
            "HTTP_ACCEPT": "*/*",
            "HTTP_CONNECTION": "keep-alive",
            "HTTP_X_API_KEY": self.api_key,
            "HTTP_IDEMPOTENCY_KEY": uuid.uuid4().hex,
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }

    def _call(self, environ: dict) -> tuple[str, bytes]:
        started: list[str] = []

        def start_response(status, headers, exc_info=None):
            started.append(status)

        chunks = self.application(environ, start_response)
        try:
            content = b"".join(chunks)
        finally:
            # As gunicorn does: closing the response sends request_finished (the metrics
            # flush, the connection's age check).
            if hasattr(chunks, "close"):
                chunks.close()
        return started[0], content


@contextlib.contextmanager
def one_round_trip(mode: str) -> Iterator[None]:
    from django.test import override_settings

    with override_settings(ORDER_CREATE_ONE_ROUND_TRIP=mode == "on"):
        yield


# --------------------------------------------------------------------------- measuring


@dataclass
class Cpu:
    """CPU (whole process, main thread) and wall seconds of a stretch of orders."""

    orders: int = 0
    process: float = 0.0
    thread: float = 0.0
    wall: float = 0.0

    def add(self, poster: OrderPoster, orders: int) -> None:
        process, thread, wall = time.process_time(), time.thread_time(), time.perf_counter()
        for _ in range(orders):
            poster.post()
        self.process += time.process_time() - process
        self.thread += time.thread_time() - thread
        self.wall += time.perf_counter() - wall
        self.orders += orders

    def ms(self, seconds: float) -> float:
        return 1000 * seconds / self.orders


def in_turns(
    poster: OrderPoster, modes: list[str], orders: int, around: Callable[[str], Any]
) -> dict[str, Cpu]:
    """`orders` creations per mode, the modes taking turns (so a change in the machine's
    load falls on all of them), each turn inside the context `around(mode)`."""
    measured = {mode: Cpu() for mode in modes}
    for share in [orders // TURNS + (turn < orders % TURNS) for turn in range(TURNS)]:
        for mode in modes:
            with one_round_trip(mode), around(mode):
                measured[mode].add(poster, share)
    return measured


class LayerSampler:
    """The main thread's stack sampled every `interval` of the process's CPU time (SIGPROF),
    each sample counted for the layer of the innermost frame that has one.

    Unlike cProfile's it costs next to nothing and inflates no code more than other code:
    a sample falls on code in proportion to the CPU it uses. A C function's time counts for
    the Python function that called it. The kernel delivers SIGPROF at most once per
    scheduler tick (every 4 ms of CPU here), hence many orders for a few thousand samples.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.layers: dict[str, Counter[str]] = defaultdict(Counter)
        self.leaves: dict[str, Counter[Func]] = defaultdict(Counter)
        self._mode: str | None = None
        self._owners: dict[Any, str] = {}

    @contextlib.contextmanager
    def sampling(self, mode: str) -> Iterator[None]:
        previous = signal.signal(signal.SIGPROF, self._sample)
        self._mode = mode
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0, 0)
            self._mode = None
            signal.signal(signal.SIGPROF, previous)

    def _sample(self, signum: int, frame: Any) -> None:
        if self._mode is None or frame is None:
            return
        code = frame.f_code
        self.leaves[self._mode][(code.co_filename, code.co_firstlineno, code.co_name)] += 1
        layer = "unattributed"
        while frame is not None:
            owner = self._owner(frame.f_code)
            if owner != TRANSPARENT:
                layer = owner
                break
            frame = frame.f_back
        self.layers[self._mode][layer] += 1

    def _owner(self, code: Any) -> str:
        if code not in self._owners:
            self._owners[code] = layer_of((code.co_filename, code.co_firstlineno, code.co_name))
        return self._owners[code]


def profiled(poster: OrderPoster, mode: str, orders: int, dump: Path) -> tuple[dict, Cpu]:
    """pstats' table of `orders` creations under cProfile timed by the main thread's CPU
    clock (so waiting for PostgreSQL or Redis costs what the wait's syscalls cost); the
    profile is also written to `dump` (for pstats, snakeviz, ...)."""
    profiler = cProfile.Profile(time.thread_time)
    cpu = Cpu()
    with one_round_trip(mode):
        profiler.enable()
        try:
            cpu.add(poster, orders)
        finally:
            profiler.disable()
    profiler.dump_stats(dump)
    stats = pstats.Stats(profiler, stream=io.StringIO()).stats  # type: ignore[attr-defined]
    return stats, cpu


def postgres_round_trips(poster: OrderPoster, mode: str, orders: int = 3) -> float:
    """Round trips per order on the wire (libpq's trace, as tests/orders/test_pg_round_trips
    counts them): every simple Query and every Sync waits for the server."""
    from django.db import connection

    waiting = re.compile(r"^[^\t]*\tF\t\d+\t(Query|Sync)\b", re.MULTILINE)
    connection.ensure_connection()
    with one_round_trip(mode), tempfile.TemporaryFile(mode="w+") as trace:
        connection.connection.pgconn.trace(trace.fileno())
        try:
            for _ in range(orders):
                poster.post()
        finally:
            if connection.connection is not None:
                connection.connection.pgconn.untrace()
        trace.flush()
        os.lseek(trace.fileno(), 0, os.SEEK_SET)
        return len(waiting.findall(trace.read())) / orders


def calls_per_order(stats: dict, path_suffix: str, name: str, orders: int) -> float:
    """ncalls per order of the profiled functions `name` in a file ending with path_suffix."""
    return sum(
        entry[1]
        for (filename, _, function), entry in stats.items()
        if function == name and filename.endswith(path_suffix)
    ) / max(orders, 1)


# --------------------------------------------------------------------------- summary


def sampled_layers(counts: Counter[str], cpu_ms: float) -> tuple[dict, dict]:
    """ms per order of each layer (its share of the samples times `cpu_ms`) and the standard
    error of each figure (binomial: sqrt(p(1-p)/n) of the share)."""
    samples = sum(counts.values())
    layers, errors = {}, {}
    for key, _ in LAYERS:
        share = counts.get(key, 0) / samples if samples else 0.0
        layers[key] = round(share * cpu_ms, 3)
        errors[key] = round(math.sqrt(share * (1 - share) / samples) * cpu_ms if samples else 0, 3)
    return layers, errors


def summarize(
    mode: str, plain: Cpu, sampled: Cpu, sampler: LayerSampler, traced: tuple[dict, Cpu], top: int
) -> dict:
    """A mode's figures: un-profiled totals, the sampled layers (ms per order, scaled to
    the un-profiled main thread's CPU), and cProfile's view of the same work."""
    cpu_ms = plain.ms(plain.thread)
    layers, errors = sampled_layers(sampler.layers[mode], cpu_ms)
    return {
        "mode": mode,
        "column": MODES[mode],
        "ORDER_CREATE_ONE_ROUND_TRIP": mode == "on",
        "unprofiled": {
            "orders": plain.orders,
            "process_cpu_ms": round(plain.ms(plain.process), 3),
            "main_thread_cpu_ms": round(cpu_ms, 3),
            "wall_ms": round(plain.ms(plain.wall), 3),
        },
        "other_threads_ms": round(max(0.0, plain.ms(plain.process - plain.thread)), 3),
        "off_cpu_ms": round(plain.ms(plain.wall - plain.process), 3),
        "sampled": {
            "orders": sampled.orders,
            "samples": sum(sampler.layers[mode].values()),
            "main_thread_cpu_ms": round(sampled.ms(sampled.thread), 3),
            "overhead_pct": round(100 * (sampled.ms(sampled.thread) / cpu_ms - 1), 1),
            "top_leaf_functions": top_leaves(sampler.leaves[mode], cpu_ms, top),
        },
        "layers_ms": layers,
        "layers_standard_error_ms": errors,
        "service_ms": round(sum(v for k, v in layers.items() if k != "harness"), 3),
        "cprofile": cprofile_view(traced, cpu_ms, top),
    }


def top_leaves(leaves: Counter[Func], cpu_ms: float, top: int) -> list[dict]:
    """The Python functions most often on top of the stack (C callees' time included)."""
    samples = sum(leaves.values()) or 1
    return [
        {"function": function_label(func), "self_ms": round(count / samples * cpu_ms, 3)}
        for func, count in leaves.most_common(top)
    ]


def cprofile_view(traced: tuple[dict, Cpu], cpu_ms: float, top: int) -> dict:
    """cProfile's figures, all scaled by one factor to the un-profiled main-thread CPU.
    Its bookkeeping (~1 us per call here) inflates call-heavy code (ORM, DRF fields) more
    than C-heavy code (psycopg, json): its layers are a cross-check, its call counts exact."""
    stats, run = traced
    seconds = Attribution(stats).layer_seconds()
    measured = sum(seconds.values())
    scale = cpu_ms / run.ms(measured) if measured else 0.0
    return {
        "orders": run.orders,
        "main_thread_cpu_ms": round(run.ms(run.thread), 3),
        "overhead_factor": round(1 / scale, 2) if scale else None,
        "layers_ms": {key: round(run.ms(seconds.get(key, 0.0)) * scale, 3) for key, _ in LAYERS},
        "calls_per_order": round(sum(entry[1] for entry in stats.values()) / run.orders, 1),
        "redis_commands_per_order": round(
            calls_per_order(stats, "redis/connection.py", "send_packed_command", run.orders), 2
        ),
        "top_functions": top_functions(stats, run.orders, scale, top),
    }


def top_functions(stats: dict, orders: int, scale: float, top: int) -> list[dict]:
    attribution = Attribution(stats)
    ranked = sorted(stats.items(), key=lambda item: -item[1][2])[:top]
    rows = []
    for func, (_, calls, self_time, cumulative, callers) in ranked:
        shares = attribution.self_time_shares(func, callers, self_time)
        rows.append(
            {
                "function": function_label(func),
                "layer": max(shares, key=lambda key: shares[key]),
                "self_ms": round(1000 * self_time / orders * scale, 3),
                "cumulative_ms": round(1000 * cumulative / orders * scale, 3),
                "calls_per_order": round(calls / orders, 1),
            }
        )
    return rows


def format_layers(results: list[dict]) -> str:
    width = max(len(label) for _, label in LAYERS) + 2
    header = f"{'ms of CPU per order':<{width}}" + "".join(f"{r['column']:>15}" for r in results)
    if len(results) == 2:
        header += f"{'after-before':>14}"
    lines = [header, "-" * len(header)]

    def row(label: str, values: list, errors: list | None = None, fmt: str = ".2f") -> None:
        cells = ""
        for n, value in enumerate(values):
            error = f" ±{errors[n]:<5.2f}" if errors else " " * 7
            cells += f"{format(value, fmt):>8}{error}"
        delta = ""
        if len(values) == 2 and all(isinstance(v, int | float) for v in values):
            delta = format(values[1] - values[0], "+14" + fmt)
        lines.append(f"{label:<{width}}{cells}{delta}")

    for key, label in LAYERS:
        if key != "harness":
            values = [r["layers_ms"][key] for r in results]
            row(label, values, [r["layers_standard_error_ms"][key] for r in results])
    lines.append("-" * len(header))
    row("service, main thread (sum of the layers)", [r["service_ms"] for r in results])
    row(LABELS["harness"], [r["layers_ms"]["harness"] for r in results])
    row("other threads (API-key cache listener, ...)", [r["other_threads_ms"] for r in results])
    row("process CPU (un-profiled, process_time)", _pick(results, "unprofiled", "process_cpu_ms"))
    lines.append("")
    row("wall time (un-profiled)", _pick(results, "unprofiled", "wall_ms"))
    row("off CPU (wall - CPU: PostgreSQL, Redis, others)", [r["off_cpu_ms"] for r in results])
    row("CPU samples (SIGPROF, ~4 ms of CPU apart)", _pick(results, "sampled", "samples"), fmt="d")
    sampled_cost = _pick(results, "sampled", "overhead_pct")
    row("sampled pass: CPU vs un-profiled (%)", sampled_cost, fmt=".1f")
    row("cProfile: inflation of CPU (x)", _pick(results, "cprofile", "overhead_factor"))
    row("cProfile: function calls", _pick(results, "cprofile", "calls_per_order"), fmt=".0f")
    row("PostgreSQL round trips (libpq trace)", [r["postgres_round_trips"] for r in results])
    row("Redis commands (main thread)", _pick(results, "cprofile", "redis_commands_per_order"))
    return "\n".join(lines)


def _pick(results: list[dict], part: str, name: str) -> list:
    return [r[part][name] for r in results]


def format_top(result: dict) -> str:
    functions = result["cprofile"]["top_functions"]
    lines = [
        f"top {len(functions)} functions by self time under cProfile, {result['column']} "
        f"(ORDER_CREATE_ONE_ROUND_TRIP={int(result['ORDER_CREATE_ONE_ROUND_TRIP'])}); ms per "
        f"order, scaled by 1/{result['cprofile']['overhead_factor']} (cProfile's inflation)",
        f"{'self':>7} {'cum':>7} {'calls':>7}  {'layer':<14} function",
    ]
    for row in functions:
        lines.append(
            f"{row['self_ms']:>7.3f} {row['cumulative_ms']:>7.2f} {row['calls_per_order']:>7.1f}"
            f"  {row['layer']:<14} {row['function']}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=300, help="measured orders per mode")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured orders per mode first")
    parser.add_argument(
        "--one-round-trip",
        choices=["on", "off"],
        default=None,
        help="one mode only (default: off = before, then on = after)",
    )
    parser.add_argument(
        "--sampled-orders",
        type=int,
        default=None,
        help="orders per mode under the sampler (default: 3 x --orders, for enough samples)",
    )
    parser.add_argument("--top", type=int, default=15, help="functions listed by self time")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        help="the service's LOG_LEVEL (default WARNING, as bench/orders_bench.py runs it; at "
        "INFO its access lines go to a file next to the results)",
    )
    add_server_args(
        parser, database_env="CPU_PROFILE_DATABASE_URL", database_default=DEFAULT_DATABASE_URL
    )
    args = parser.parse_args(argv)
    if args.orders < 1 or args.warmup < 0 or args.top < 0:
        parser.error("--orders must be at least 1, --warmup and --top at least 0")
    args.modes = [args.one_round_trip] if args.one_round_trip else ["off", "on"]
    args.sampled_orders = args.sampled_orders or 3 * args.orders
    return args


def set_up_django(env: dict[str, str], log_path: Path) -> Callable:
    """The service's WSGI application, set up with `env`, logging to `log_path`."""
    os.environ.update(env)
    # Sets Django up (and its logging: every django.setup() configures it anew).
    from orders_project.wsgi import application

    # The service logs to stderr; what it logs here (access lines at INFO) goes to a file.
    stream = log_path.open("a")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (
            sys.stderr,
            sys.stdout,
        ):
            handler.setStream(stream)
    return application


def new_api_key(run_tag: str) -> str:
    from clients.services import api_client_create

    _, key = api_client_create(name=f"cpu-profile-{run_tag}")
    return key


def measure(args: argparse.Namespace, poster: OrderPoster, stamp: str) -> list[dict]:
    for mode in args.modes:
        log(f"warm-up: {args.warmup} orders, one round trip {mode}")
        with one_round_trip(mode):
            for _ in range(args.warmup):
                poster.post()
    log(f"un-profiled: {args.orders} orders per mode, modes taking turns")
    plain = in_turns(poster, args.modes, args.orders, lambda mode: contextlib.nullcontext())
    log(f"sampled: {args.sampled_orders} orders per mode, modes taking turns")
    sampler = LayerSampler()
    sampled = in_turns(poster, args.modes, args.sampled_orders, sampler.sampling)
    results = []
    for mode in args.modes:
        log(f"under cProfile: {args.orders} orders, one round trip {mode}")
        dump = RESULTS_DIR / f"order-cpu-{stamp}-{MODES[mode]}.prof"
        traced = profiled(poster, mode, args.orders, dump)
        result = summarize(mode, plain[mode], sampled[mode], sampler, traced, args.top)
        result["cprofile"]["profile"] = shown_path(dump)
        result["postgres_round_trips"] = postgres_round_trips(poster, mode)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = utc_stamp()
    run_tag = secrets.token_hex(4)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    db = DbUrl.parse(args.database_url, default_name="orders_cpuprofile")
    prometheus_dir = tempfile.mkdtemp(prefix="order-cpu-prom-")
    env = service_environment(args, run_tag, prometheus_dir)
    service_log = RESULTS_DIR / f"order-cpu-{stamp}-service.log"
    header = {
        "timestamp": stamp,
        "git": git_revision(),
        "python": platform.python_version(),
        "cores": core_count(),
        "load_average_at_start": os.getloadavg(),
        "database": f"{db.host}:{db.port}/{db.name}",
        "orders_per_mode": args.orders,
        "warmup_orders_per_mode": args.warmup,
        "log_level": args.log_level,
        "sampled_orders_per_mode": args.sampled_orders,
        "layers_from": "SIGPROF samples of the main thread, scaled to un-profiled CPU",
        "top_functions_from": "cProfile (timer time.thread_time), scaled proportionally",
    }
    print(
        f"order CPU profile {stamp}: {args.orders} orders per mode after {args.warmup} "
        f"warm-up, in-process WSGI, git {header['git']}, load average "
        f"{header['load_average_at_start'][0]:.2f} on {header['cores']} cores",
        flush=True,
    )

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        prepare_database(db, {**os.environ, **env})
        product_ids = upsert_products(db)
        poster = OrderPoster(
            application=set_up_django(env, service_log),
            api_key=new_api_key(run_tag),
            product_ids=product_ids,
            run_tag=run_tag,
        )
        results = measure(args, poster, stamp)
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    finally:
        redis_cleanup(args.redis_url, run_tag)
        shutil.rmtree(prometheus_dir, ignore_errors=True)
        if service_log.exists() and not service_log.stat().st_size:
            service_log.unlink()  # nothing logged (LOG_LEVEL=WARNING and no trouble)

    print()
    print(format_layers(results))
    print(
        "\nLayers: CPU samples of the main thread (SIGPROF, every ~4 ms of CPU), each counted "
        "for the innermost frame's layer by its module (standard-library, Django-utility and C "
        "functions count for the Python code that called them), times the un-profiled "
        "main-thread CPU per order; ± one standard error of the sampling. cProfile's own view "
        "(exact call counts, but ~1 us of bookkeeping per call inflates call-heavy code more "
        "than C-heavy code) is in the JSON, scaled proportionally; its top functions below."
    )
    for result in results:
        print()
        print(format_top(result))
    out_path = RESULTS_DIR / f"order-cpu-{stamp}.json"
    write_json(out_path, {"header": header, "layers": dict(LAYERS), "results": results})
    print(f"\nresults: {shown_path(out_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
