"""Prometheus endpoint. Under gunicorn, PROMETHEUS_MULTIPROC_DIR makes every worker write
its samples to files there and /metrics aggregates them (see gunicorn.conf.py)."""

from django.views.decorators.http import require_GET
from django_prometheus.exports import ExportToDjangoView

metrics_view = require_GET(ExportToDjangoView)
