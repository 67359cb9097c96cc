"""Load generator for POST /api/v1/orders/, run as a separate process by orders_bench.py.

Closed loop: `--concurrency` threads (split over `--procs` processes), each with its own
requests.Session (keep-alive), send one order after another for `--warmup` + `--duration`
seconds. Every request has a unique Idempotency-Key and a unique customer email, so no
request is a replay and no (client, email) rate-limit window fills up.

Variants: `normal` orders the two products given by --products (both lines, random order,
quantity 1-3); `hot` orders only the first product (1 line); `spread` orders 2 distinct
products drawn at random from all those given (little row-lock contention).

Only requests that complete inside the measured window (after the warm-up) count. Prints
one JSON object on stdout: completed, status counts, latencies summary, elapsed, the
loadgen's own CPU seconds and a few sample error bodies. The API key comes from the
BENCH_API_KEY environment variable, so it does not show in `ps`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import resource
import sys
import threading
import time
import uuid
from collections import Counter

import requests

MAX_ERROR_SAMPLES = 5


def _worker_thread(
    *,
    url: str,
    api_key: str,
    variant: str,
    products: list[str],
    warmup_end: float,
    end: float,
    tag: str,
    out: dict,
) -> None:
    session = requests.Session()
    session.headers.update({"X-API-Key": api_key, "Content-Type": "application/json"})
    rng = random.Random()
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    errors: list[str] = []
    ok_all = 0  # 201s warm-up included: the load loop's CPU is spent on those too
    n = 0
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        n += 1
        if variant == "hot":
            items = [{"product_id": products[0], "quantity": 1}]
        elif variant == "spread":
            items = [
                {"product_id": pid, "quantity": rng.randint(1, 3)}
                for pid in rng.sample(products, 2)
            ]
        else:
            items = [
                {"product_id": products[0], "quantity": rng.randint(1, 3)},
                {"product_id": products[1], "quantity": rng.randint(1, 3)},
            ]
            rng.shuffle(items)
        body = json.dumps({"email": f"b-{tag}-{n}@example.com", "items": items})
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        started = time.perf_counter()
        try:
            response = session.post(url, data=body, headers=headers, timeout=60)
            status = str(response.status_code)
            detail = response.text[:300] if response.status_code != 201 else ""
        except requests.RequestException as exc:
            status = f"exception:{type(exc).__name__}"
            detail = str(exc)[:300]
        finished = time.perf_counter()
        ok_all += status == "201"
        if warmup_end <= finished <= end:
            latencies.append(finished - started)
            statuses[status] += 1
            if detail and len(errors) < MAX_ERROR_SAMPLES:
                errors.append(f"{status}: {detail}")
    session.close()
    out["ok_all"] += ok_all
    out["latencies"].extend(latencies)
    out["statuses"].update(statuses)
    out["errors"].extend(errors[: MAX_ERROR_SAMPLES - len(out["errors"])])


def run_threads(args: argparse.Namespace, threads: int, proc_index: int, start_at: float):
    """Run `threads` client threads in this process; returns the merged raw results."""
    api_key = os.environ["BENCH_API_KEY"]
    products = args.products.split(",")
    # perf_counter is per-process; all processes agree on wall time, so convert once.
    offset = time.time() - time.perf_counter()
    warmup_end = start_at + args.warmup - offset
    end = warmup_end + args.duration
    out: dict = {"latencies": [], "statuses": Counter(), "errors": [], "ok_all": 0}
    lock = threading.Lock()

    def target(i: int) -> None:
        local: dict = {"latencies": [], "statuses": Counter(), "errors": [], "ok_all": 0}
        _worker_thread(
            url=args.url,
            api_key=api_key,
            variant=args.variant,
            products=products,
            warmup_end=warmup_end,
            end=end,
            tag=f"{args.run_tag}-{proc_index}-{i}",
            out=local,
        )
        with lock:
            out["ok_all"] += local["ok_all"]
            out["latencies"].extend(local["latencies"])
            out["statuses"].update(local["statuses"])
            out["errors"].extend(local["errors"][: MAX_ERROR_SAMPLES - len(out["errors"])])

    pool = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(threads)]
    # CPU of the load loop alone (all this process's threads), without interpreter start-up
    # and imports: what one more order costs the load generator.
    cpu_before = time.process_time()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    out["load_cpu_seconds"] = time.process_time() - cpu_before
    return out


def _child(args, threads, proc_index, start_at, queue) -> None:
    result = run_threads(args, threads, proc_index, start_at)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    result["statuses"] = dict(result["statuses"])
    queue.put(result)


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="full URL of POST /api/v1/orders/")
    parser.add_argument("--products", required=True, help="comma-separated product ids")
    parser.add_argument("--variant", choices=["normal", "hot", "spread"], default="normal")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--procs", type=int, default=1, help="processes to spread threads over")
    parser.add_argument("--run-tag", default=uuid.uuid4().hex[:8], help="makes emails unique")
    args = parser.parse_args(argv)

    procs = max(1, min(args.procs, args.concurrency))
    # Give every process a moment to start before the clock begins.
    start_at = time.time() + (0.3 if procs > 1 else 0.0)
    shares = [args.concurrency // procs + (i < args.concurrency % procs) for i in range(procs)]
    results = []
    if procs == 1:
        results.append(run_threads(args, shares[0], 0, start_at))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        results[0]["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    else:
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        children = [
            ctx.Process(target=_child, args=(args, share, i, start_at, queue), daemon=True)
            for i, share in enumerate(shares)
        ]
        for child in children:
            child.start()
        results = [queue.get() for _ in children]
        for child in children:
            child.join()
        own = resource.getrusage(resource.RUSAGE_SELF)
        results.append(
            {
                "latencies": [],
                "statuses": {},
                "errors": [],
                "ok_all": 0,
                "load_cpu_seconds": 0.0,
                "cpu_seconds": own.ru_utime + own.ru_stime,
            }
        )

    latencies = sorted(x for r in results for x in r["latencies"])
    statuses: Counter[str] = Counter()
    for r in results:
        statuses.update(r["statuses"])
    completed = len(latencies)
    ok = statuses.get("201", 0)
    ok_all = sum(r["ok_all"] for r in results)
    load_cpu_s = sum(r["load_cpu_seconds"] for r in results)
    summary = {
        "variant": args.variant,
        "concurrency": args.concurrency,
        "procs": procs,
        "duration_s": args.duration,
        "completed": completed,
        "ok": ok,
        "errors": completed - ok,
        "statuses": dict(sorted(statuses.items())),
        "orders_per_s": ok / args.duration,
        "requests_per_s": completed / args.duration,
        "p50_ms": _ms(percentile(latencies, 0.50)),
        "p90_ms": _ms(percentile(latencies, 0.90)),
        "p99_ms": _ms(percentile(latencies, 0.99)),
        "max_ms": _ms(latencies[-1] if latencies else None),
        "loadgen_cpu_s": sum(r["cpu_seconds"] for r in results),
        # The load loop's CPU (warm-up included, start-up excluded) per 201 it received in
        # that loop: the load generator's share of the 2 cores, per order.
        "loadgen_load_cpu_s": round(load_cpu_s, 3),
        "ok_all": ok_all,
        "loadgen_cpu_ms_per_order": round(1000 * load_cpu_s / ok_all, 3) if ok_all else None,
        "error_samples": [e for r in results for e in r["errors"]][:MAX_ERROR_SAMPLES],
    }
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


if __name__ == "__main__":
    sys.exit(main())
