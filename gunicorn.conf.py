"""gunicorn settings for the web process; every value can be overridden by env."""

import os

bind = os.environ.get("BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "1"))
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
# SIGTERM: stop accepting, let in-flight requests finish within this many seconds.
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", "30"))
accesslog = None  # the app writes its own JSON access log line per request

# gunicorn's own lines (master and worker life cycle, timeouts) as JSON with the formatter of
# the app's LOGGING, so a log shipper reads one format from the web process. gunicorn updates
# its defaults with this dict key by key, hence every key it has is given here.
_json_handler = {
    "class": "logging.StreamHandler",
    "formatter": "json",
    "stream": "ext://sys.stderr",
}
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "core.logging.JsonFormatter"}},
    "handlers": {"console": _json_handler},
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["console"], "propagate": False},
        # A logging config switches gunicorn's access log on; the app's `orders.access` line
        # already says it all (with the request id), so gunicorn's stays quiet (it logs at INFO).
        "gunicorn.access": {"level": "WARNING", "handlers": ["console"], "propagate": False},
    },
}
wsgi_app = "orders_project.wsgi:application"


def child_exit(server, worker):
    # A dead worker's live gauges must stop counting in the aggregated /metrics.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


# gunicorn 27's control socket defaults to one path per OS user; two services (or a test
# and `make run`) on one machine would fight over it, and nothing here uses it.
control_socket_disable = True
