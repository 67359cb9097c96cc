"""/healthz and /readyz (SPEC §3 Endpoints, §7): readiness names the failing part.

The outages are real: Redis and PostgreSQL are pointed at a port where nothing listens.
"""

from __future__ import annotations

import pytest
from django.db import connections
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client

from tests.common.helpers import assert_problem, free_port


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


def test_healthz_answers_ok_without_touching_dependencies(client):
    # no db mark: a liveness probe must not need the database
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_answers_head(client):
    assert client.head("/healthz").status_code == 200


@pytest.mark.django_db
def test_readyz_is_200_when_everything_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "ok", "migrations": "ok"},
    }


@pytest.mark.django_db
def test_readyz_is_503_naming_redis_when_redis_is_unreachable(client, settings):
    # given Redis at a port where nothing listens
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    # when
    response = client.get("/readyz")
    # then
    problem = assert_problem(response, status=503, code="not_ready")
    assert problem["failing"] == ["redis"]
    assert problem["checks"]["database"] == "ok"
    assert problem["checks"]["redis"].startswith("unreachable")
    assert "redis" in problem["detail"]


@pytest.fixture
def database_unreachable(django_db_blocker):
    """Point the default connection at a closed port for the test, then put it back."""
    connection = connections["default"]
    original_port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        yield
    finally:
        connection.settings_dict["PORT"] = original_port
        connection.close()
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute("SELECT 1")  # the next tests get a working database


@pytest.mark.django_db(transaction=True)
def test_readyz_is_503_naming_database_when_postgres_is_unreachable(client, database_unreachable):
    # given (fixture) PostgreSQL unreachable
    # when
    response = client.get("/readyz")
    # then
    problem = assert_problem(response, status=503, code="not_ready")
    assert "database" in problem["failing"]
    assert problem["checks"]["database"] == "unreachable: OperationalError"
    assert problem["checks"]["redis"] == "ok"


@pytest.mark.django_db(transaction=True)
def test_readyz_recovers_when_the_database_comes_back(client):
    # given an outage that has ended (the previous fixture's restore, done again here)
    connection = connections["default"]
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        assert client.get("/readyz").status_code == 503
    finally:
        connection.settings_dict["PORT"] = port
    # when the probe asks again
    response = client.get("/readyz")
    # then it is ready without a restart
    assert response.status_code == 200


@pytest.mark.django_db
def test_readyz_is_503_naming_migrations_when_one_is_pending(client):
    # given the last applied migration of an app is forgotten by the recorder
    # (inside this test's transaction, rolled back afterwards)
    connection = connections["default"]
    leaf_app, leaf_name = sorted(MigrationExecutor(connection).loader.graph.leaf_nodes())[0]
    deleted, _ = (
        MigrationRecorder(connection).migration_qs.filter(app=leaf_app, name=leaf_name).delete()
    )
    assert deleted == 1
    # when
    response = client.get("/readyz")
    # then
    problem = assert_problem(response, status=503, code="not_ready")
    assert problem["failing"] == ["migrations"]
    assert problem["checks"]["migrations"] == "1 pending"
