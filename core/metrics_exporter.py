"""The Prometheus exporter of a Celery process (worker or beat), when METRICS_PORT is set.

The relay and saga counters (outbox_published_total, payments_saga_steps_total, ...) are
counted where the tasks run: in the Celery worker's pool processes. Under `make run` every
process shares one PROMETHEUS_MULTIPROC_DIR and web's /metrics sums them all, so
METRICS_PORT stays unset and nothing here runs. In docker-compose each container has a
directory of its own, so the worker and beat serve their own samples on METRICS_PORT
(reachable on the internal network only, never published).

With PROMETHEUS_MULTIPROC_DIR set, the exporter (a thread of the main process) serves the
sum of the files every process of this container writes there: prefork children count the
tasks, the main process serves them. Without it, only the main process's own registry,
which is everything under `--pool=solo` and for beat.
"""

from __future__ import annotations

import logging
import os
from wsgiref.simple_server import WSGIServer

import prometheus_client
from prometheus_client import CollectorRegistry, multiprocess

logger = logging.getLogger(__name__)

# The running exporter of this process, if any (one per process, whatever signals fire).
_server: WSGIServer | None = None


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exporter_registry() -> CollectorRegistry:
    if _multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return prometheus_client.REGISTRY


def start_exporter(*, process: str) -> int | None:
    """Serve this process's metrics on METRICS_BIND:METRICS_PORT; the port, or None when
    METRICS_PORT is unset. A second call in the same process changes nothing."""
    global _server
    raw_port = os.environ.get("METRICS_PORT", "").strip()
    if not raw_port:
        return None
    try:
        port = int(raw_port)
    except ValueError:
        raise ValueError(f"METRICS_PORT must be a port number, not {raw_port!r}") from None
    if _server is None:
        bind = os.environ.get("METRICS_BIND", "").strip() or "0.0.0.0"  # noqa: S104 - by design
        _server, _thread = prometheus_client.start_http_server(
            port, addr=bind, registry=exporter_registry()
        )
        logger.info(
            "metrics exporter listening",
            # Not "process": LogRecord has that attribute (the pid), and logging refuses
            # to overwrite it (a KeyError in the worker_init/beat_init handler).
            extra={
                "celery_process": process,
                "address": f"{bind}:{port}",
                "multiprocess": bool(_multiprocess_dir()),
            },
        )
    return port


def forget_inherited_exporter() -> None:
    """In a freshly forked pool child: close the copy of the parent's listening socket.

    The child has no serving thread; holding the socket would only keep the port bound
    (and accepting into a queue nobody reads) should the parent die before the child.
    Closing the child's descriptor leaves the parent's socket open.
    """
    global _server
    if _server is not None:
        _server.socket.close()
        _server = None


def mark_child_dead(pid: int) -> None:
    """A pool child exited: its live gauges must stop counting (counters stay summed)."""
    if _multiprocess_dir():
        multiprocess.mark_process_dead(pid)
