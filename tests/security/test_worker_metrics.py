"""The Celery worker's and beat's own counters are scrapeable (issue 9, item 5, second half).

In docker-compose each container has its own PROMETHEUS_MULTIPROC_DIR, so web's /metrics
never sees what the worker counts (relay, saga). With METRICS_PORT set, the worker and beat
serve their own samples (core/metrics_exporter.py). Here a real prefork
worker (two pool children, which count the relayed events in their own files) and a real
beat run as subprocesses against the test database and a private Redis; the worker's
exporter, in its main process, must show what the children counted.
"""

from __future__ import annotations

import logging
import re
import uuid

import pytest
import requests
from django.db import connection

from core import metrics_exporter
from scripts.processes import (
    beat_command,
    database_url,
    service_env,
    start_process,
    stop_all,
    worker_command,
)
from scripts.servers import free_port, start_redis
from tests.event_contract import stop_after_checking_streams
from tests.outbox.helpers import enqueue, new_aggregate_ids
from tests.polling import eventually

EVENTS = 12


def _sample(text: str, name: str) -> float | None:
    """The value of an unlabelled sample in Prometheus text format, or None if absent."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def _scrape(port: int) -> requests.Response | None:
    try:
        return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    except requests.RequestException:
        return None


@pytest.fixture
def private_redis(tmp_path):
    server = start_redis(tmp_path / "redis", free_port())
    yield server
    stop_after_checking_streams(server)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_worker_exporter_shows_what_its_pool_children_relayed(tmp_path, private_redis):
    # given a prefork worker and a beat, each with METRICS_PORT and a multiprocess dir of
    # its own (as in docker-compose), on a queue and stream of this test only
    worker_port, beat_port = free_port(), free_port()
    names = f"worker-metrics-{uuid.uuid4().hex[:8]}"
    processes = []

    def env(metrics_dir_name: str, port: int) -> dict[str, str]:
        metrics_dir = tmp_path / metrics_dir_name
        metrics_dir.mkdir()
        return service_env(
            database_url=database_url(connection.settings_dict),
            redis_url=private_redis.url,
            names=names,
            metrics_dir=metrics_dir,
            METRICS_PORT=port,
            METRICS_BIND="127.0.0.1",
            OUTBOX_RELAY_INTERVAL="1",
            OUTBOX_NUDGE_ON_COMMIT="0",
            PAYMENT_NUDGE_ON_COMMIT="0",
        )

    try:
        processes.append(
            start_process(
                "worker",
                worker_command(hostname=f"{names}@%h", pool="prefork", concurrency=2),
                env("prometheus-worker", worker_port),
                tmp_path / "worker.log",
                cwd=tmp_path,
                die_with_parent=True,  # no orphan if pytest itself is killed
            )
        )
        processes.append(
            start_process(
                "beat",
                beat_command(pidfile=tmp_path / "beat.pid", schedule=tmp_path / "beat-schedule"),
                env("prometheus-beat", beat_port),
                tmp_path / "beat.log",
                cwd=tmp_path,
                die_with_parent=True,
            )
        )
        worker, beat = processes
        before = eventually(
            lambda: _scrape(worker_port), timeout=30, what="worker exporter up", alive=[worker]
        )
        assert before.status_code == 200
        assert before.headers["Content-Type"].startswith("text/plain")
        assert (_sample(before.text, "outbox_published_total") or 0.0) == 0.0

        # when events are written to the outbox (beat schedules the relay every second)
        enqueue(aggregate_ids=new_aggregate_ids(EVENTS // 2), versions=[1, 2])

        # then the worker's exporter shows the pool children's relay counter
        def published() -> float:
            response = _scrape(worker_port)
            return (_sample(response.text, "outbox_published_total") or 0.0) if response else 0.0

        # (the deadline moves only while the scraped count does: a busy worker whose count
        # never shows up fails one window after the last change)
        total = eventually(
            lambda: published() >= EVENTS and published(),
            timeout=60,
            what=f"worker exporter shows outbox_published_total >= {EVENTS}",
            interval=0.5,
            alive=[worker, beat],
            progress=published,
        )
        print(f"worker exporter: outbox_published_total {total} after {EVENTS} events")
        # ... counted in the pool children's files, served by the main process
        children_files = [
            path
            for path in (tmp_path / "prometheus-worker").glob("counter_*.db")
            if path.stem != f"counter_{worker.pid}"
        ]
        assert children_files, "no pool child wrote samples"

        # and beat serves its own exporter on its own port
        beat_scrape = eventually(
            lambda: _scrape(beat_port), timeout=30, what="beat exporter up", alive=[beat]
        )
        assert beat_scrape.status_code == 200
        assert beat_scrape.headers["Content-Type"].startswith("text/plain")
    finally:
        stop_all(processes)
        for process in processes:
            print(f"----- {process.name} (exit {process.returncode})\n{process.log_tail(40)}")


def test_no_exporter_without_metrics_port(monkeypatch):
    # given METRICS_PORT unset (as under `make run`, where web's /metrics sums everything)
    monkeypatch.delenv("METRICS_PORT", raising=False)
    # when a worker starts, then no exporter is started
    assert metrics_exporter.start_exporter(process="worker") is None
    assert metrics_exporter._server is None


def test_exporter_start_is_logged_without_clashing_with_logrecord(monkeypatch):
    # given METRICS_PORT and the exporter's logger at INFO (as in docker-compose)
    port = free_port()
    monkeypatch.setenv("METRICS_PORT", str(port))
    monkeypatch.setenv("METRICS_BIND", "127.0.0.1")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(metrics_exporter, "_server", None)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("core.metrics_exporter")
    monkeypatch.setattr(logger, "level", logging.INFO)
    logger.addHandler(handler)
    try:
        # when beat's start signal starts it, then it serves and logs which process it is
        # (an `extra` key named like a LogRecord attribute raised KeyError here)
        assert metrics_exporter.start_exporter(process="beat") == port
        assert _scrape(port).status_code == 200
        assert [r.celery_process for r in records] == ["beat"]
    finally:
        logger.removeHandler(handler)
        server = metrics_exporter._server
        if server is not None:
            server.shutdown()
            server.server_close()
