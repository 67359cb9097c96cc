"""The Celery application: Redis broker, configuration from Django settings (CELERY_*).

The request id of whatever sent a task (an HTTP request's X-Request-ID, or nothing for
beat) travels in the task message's headers and is bound again while the task runs, so the
task's log lines carry the same `request_id` as the request that caused them.
"""

import os

from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orders_project.settings")

app = Celery("orders_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

REQUEST_ID_HEADER = "request_id"


@before_task_publish.connect
def _send_request_id(headers=None, **kwargs) -> None:
    from orders_project.common.request_id import current_request_id

    request_id = current_request_id()
    if request_id and headers is not None:
        headers[REQUEST_ID_HEADER] = request_id


@task_prerun.connect
def _bind_request_id(task=None, **kwargs) -> None:
    from orders_project.common.request_id import set_request_id

    request_id = getattr(task.request, REQUEST_ID_HEADER, None) if task else None
    task.request._request_id_token = set_request_id(request_id)


@task_postrun.connect
def _unbind_request_id(task=None, **kwargs) -> None:
    from orders_project.common.request_id import reset_request_id

    token = getattr(task.request, "_request_id_token", None) if task else None
    if token is not None:
        reset_request_id(token)
