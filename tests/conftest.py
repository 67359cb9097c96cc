"""Shared fixtures. Tests run against the real PostgreSQL and Redis (see README)."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from tests import event_contract
from tests.factories import make_api_client
from tests.fuzz import summary as fuzz_summary


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    fuzz_summary.pytest_terminal_summary(terminalreporter, exitstatus, config)
    if hasattr(config, "workerinput"):
        return  # a pytest-xdist worker: the controller prints the merged counts
    lines = event_contract.summary_lines()
    if lines:
        terminalreporter.write_sep("=", "event contract")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session", autouse=True)
def _check_then_forget_the_streams_of_this_run():
    """When the run ends, every entry of its streams is checked against the event contract
    (tests/event_contract.py); then its streams, dedupe keys and counters are removed."""
    yield
    prefix = settings.EVENT_STREAM.rsplit(":", 1)[0]
    try:
        event_contract.check_streams(settings.EVENT_STREAM_REDIS_URL, match=f"{prefix}*")
    finally:
        event_contract.save_this_process_counts()
        _forget_keys(prefix)


def _forget_keys(prefix: str) -> None:
    """This run's keys, and kombu's bindings of this run's queues (named after them)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = [
            key
            for pattern in (f"{prefix}*", f"_kombu.binding*.{prefix}*")
            for key in client.scan_iter(match=pattern, count=1000)
        ]
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    except redis.RedisError:
        pass  # a test that stopped Redis on purpose is not a reason to fail the run
    finally:
        client.close()


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def api_client_and_key(db):
    return make_api_client()


@pytest.fixture
def authed_api(api_client_and_key) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_client_and_key[1])
    return client
