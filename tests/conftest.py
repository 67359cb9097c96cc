"""Shared fixtures. Tests run against the real PostgreSQL and Redis (see README)."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from tests.factories import make_api_client
from tests.fuzz.summary import pytest_terminal_summary  # noqa: F401 (prints the fuzz summary)


@pytest.fixture(scope="session", autouse=True)
def _forget_redis_keys_of_this_run():
    """Streams, dedupe keys and counters of this test run are removed when it ends."""
    yield
    prefix = settings.EVENT_STREAM.rsplit(":", 1)[0]
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
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
