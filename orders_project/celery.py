"""The Celery application: Redis broker, configuration from Django settings (CELERY_*).

The request id of whatever sent a task (an HTTP request's X-Request-ID, or nothing for
beat) travels in the task message's headers and is bound again while the task runs, so the
task's log lines carry the same `request_id` as the request that caused them.

With METRICS_PORT set (docker-compose), the worker and beat serve their own Prometheus
metrics: core/metrics_exporter.py.

With WORKER_HEARTBEAT_FILE set (docker-compose), the worker touches that file at each of its
event heartbeats (every 2 s, sent by the consumer's event loop to the broker): the
container's healthcheck reads its age. A worker whose loop is stuck, or that cannot reach
the broker, stops touching it.
"""

import os
from pathlib import Path

from celery import Celery
from celery.signals import (
    beat_init,
    before_task_publish,
    heartbeat_sent,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orders_project.settings")

app = Celery("orders_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
# celery-redbeat asks whether its settings were given by their bare names (is_key_in_conf
# ignores the CELERY_ namespace), so CELERY_REDBEAT_REDIS_URL alone reads as unset and beat
# warns at every start that it "will stop falling back to broker_url". Give them to it under
# the names it looks for, read when the configuration loads (lazily, as the rest is).


def _redbeat_bare_names() -> dict[str, object]:
    from django.conf import settings

    return {
        "redbeat_redis_url": settings.CELERY_REDBEAT_REDIS_URL,
        "redbeat_redis_options": settings.CELERY_REDBEAT_REDIS_OPTIONS,
    }


app.add_defaults(_redbeat_bare_names)
app.autodiscover_tasks()

REQUEST_ID_HEADER = "request_id"


@before_task_publish.connect
def _send_request_id(headers=None, **kwargs) -> None:
    from core.request_id import current_request_id

    request_id = current_request_id()
    if request_id and headers is not None:
        headers[REQUEST_ID_HEADER] = request_id


@task_prerun.connect
def _bind_request_id(task=None, **kwargs) -> None:
    from core.request_id import set_request_id

    request_id = getattr(task.request, REQUEST_ID_HEADER, None) if task else None
    task.request._request_id_token = set_request_id(request_id)


@task_postrun.connect
def _unbind_request_id(task=None, **kwargs) -> None:
    from core.request_id import reset_request_id

    token = getattr(task.request, "_request_id_token", None) if task else None
    if token is not None:
        reset_request_id(token)


@worker_init.connect
def _start_worker_exporter(**kwargs) -> None:
    # In the main process, before the pool forks: it serves what every child counts.
    from core.metrics_exporter import start_exporter

    start_exporter(process="worker")


@beat_init.connect
def _start_beat_exporter(**kwargs) -> None:
    from core.metrics_exporter import start_exporter

    start_exporter(process="beat")


@worker_process_init.connect
def _forget_exporter_in_child(**kwargs) -> None:
    from core.metrics_exporter import forget_inherited_exporter

    forget_inherited_exporter()


@worker_process_shutdown.connect
def _mark_child_dead(pid=None, **kwargs) -> None:
    from core.metrics_exporter import mark_child_dead

    mark_child_dead(pid or os.getpid())


_HEARTBEAT_FILE = os.environ.get("WORKER_HEARTBEAT_FILE", "").strip()
if _HEARTBEAT_FILE:
    # Connected only when asked for: celery sends heartbeat_sent only if it has receivers.

    @heartbeat_sent.connect(weak=False)
    def _touch_heartbeat_file(**kwargs) -> None:
        Path(_HEARTBEAT_FILE).touch()
