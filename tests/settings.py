"""Test settings: the real ones, with a fixed secret and Redis names private to this run.

Every pytest-xdist worker gets its own stream, queue and key prefixes, so parallel workers
(and a `make run` on the same Redis) never see each other's events, tasks or counters.
"""

import os
import uuid

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")

from orders_project.settings import *  # noqa: F403
from orders_project.settings import CACHES

_RUN = f"test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{uuid.uuid4().hex[:8]}"

CACHES["default"]["KEY_PREFIX"] = _RUN
RATE_LIMIT_KEY_PREFIX = f"{_RUN}:rl"
# Every test client connects from 127.0.0.1, so the wrong keys of one test (the fuzzer sends
# hundreds) would get the next test's wrong key a 429 instead of its 401. The throttle's own
# tests (tests/security/test_api_key_throttle.py) set small limits and their own addresses.
API_KEY_FAILURE_RATE_LIMIT = "1000000/60s"
EVENT_STREAM = f"{_RUN}:events"
CELERY_TASK_DEFAULT_QUEUE = f"{_RUN}:celery"
CELERY_REDBEAT_KEY_PREFIX = f"{_RUN}:redbeat"
# Tests that exercise the relay run it explicitly or start a worker with their own settings.
OUTBOX_NUDGE_ON_COMMIT = False
PAYMENT_NUDGE_ON_COMMIT = False
