"""Shared fixtures. Tests run against the real PostgreSQL and Redis (see README)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import make_api_client


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
