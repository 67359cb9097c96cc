"""/metrics under gunicorn with several workers sums every worker (SPEC §7).

Each sync worker is its own process with its own counters; with PROMETHEUS_MULTIPROC_DIR
they write them to files there and /metrics aggregates the files. Without it, each worker
would report only the requests it happened to serve.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from django.db import connection

from scripts.processes import group_cpu_seconds
from scripts.servers import free_port
from tests.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 60


def _count(metrics_text: str) -> float:
    match = re.search(
        r'^django_http_responses_total_by_status_total\{status="200"\} (\S+)$', metrics_text, re.M
    )
    return float(match.group(1)) if match else 0.0


@pytest.mark.slow
@pytest.mark.django_db
def test_metrics_sum_the_requests_of_every_gunicorn_worker(tmp_path):
    # given gunicorn with two workers sharing a fresh multiprocess directory
    prometheus_dir = tmp_path / "prometheus"
    prometheus_dir.mkdir()
    port = free_port()
    db = connection.settings_dict
    host, db_port = db["HOST"] or "127.0.0.1", db["PORT"] or 5432
    env = dict(
        os.environ,
        SECRET_KEY="x" * 50,
        DATABASE_URL=f"postgres://{db['USER']}@{host}:{db_port}/{db['NAME']}",
        PORT=str(port),
        WEB_CONCURRENCY="2",
        PROMETHEUS_MULTIPROC_DIR=str(prometheus_dir),
        LOG_LEVEL="WARNING",
    )
    log = (tmp_path / "gunicorn.log").open("w")
    web = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            try:
                return requests.get(f"{base}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        eventually(
            healthy,
            timeout=60,
            what="gunicorn answers /healthz",
            progress=lambda: round(group_cpu_seconds(web.pid), 2),
        )
        before = _count(requests.get(f"{base}/metrics", timeout=5).text)

        # when many requests arrive at once (one sync worker cannot take them all), in
        # bursts until both workers have served some (each writes its own counter file; on
        # a busy machine one worker may get no CPU during a whole burst)
        sent = 0

        def burst_served_by_both() -> bool:
            nonlocal sent
            with ThreadPoolExecutor(max_workers=8) as pool:
                statuses = list(
                    pool.map(
                        lambda _: requests.get(f"{base}/healthz", timeout=10).status_code,
                        range(REQUESTS),
                    )
                )
            assert statuses == [200] * REQUESTS
            sent += REQUESTS
            return len(set(prometheus_dir.glob("counter_*.db"))) >= 2

        eventually(burst_served_by_both, timeout=30, what="both workers serving", ceiling=3)

        # then /metrics, whichever worker answers it, counts all of them
        for _ in range(4):
            after = _count(requests.get(f"{base}/metrics", timeout=5).text)
            assert after - before >= sent + 1, (before, after, sent)
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        try:
            web.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait()
        log.close()
