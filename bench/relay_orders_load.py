"""Run bench/orders_bench.py so that its gunicorn nudges the relay bench's Celery queue.

Used by bench/relay_bench.py for the lag phase: orders_bench.py gives its service a private
Celery queue named by `celery_queue(run_tag)`; here that name is replaced by the one in
RELAY_BENCH_CELERY_QUEUE, which the relay bench's worker consumes (and the relay bench, not
orders_bench.py, deletes that queue's keys at the end). Everything else
(arguments, environment such as EVENT_STREAM) passes through unchanged.
Exit code 3: orders_bench.py is not usable this way (the relay bench then drives orders
itself).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    queue = os.environ["RELAY_BENCH_CELERY_QUEUE"]
    try:
        import orders_bench
    except Exception as exc:
        print(f"cannot import bench/orders_bench.py: {type(exc).__name__}: {exc}", flush=True)
        return 3
    if not all(
        callable(getattr(orders_bench, name, None))
        for name in ("celery_queue", "redis_cleanup", "main")
    ):
        print("bench/orders_bench.py has no celery_queue/redis_cleanup/main to hook", flush=True)
        return 3
    orders_bench.celery_queue = lambda run_tag: queue
    # Its clean-up deletes `*<queue>*` keys, which would unbind the queue under the relay
    # bench's still-running worker; the relay bench deletes its queue itself at the end.
    orders_bench.redis_cleanup = lambda redis_url, run_tag: None
    return orders_bench.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
