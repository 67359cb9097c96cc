"""Liveness and readiness probes."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe

from core.problems import problem_response


@require_safe  # GET and HEAD: probes and uptime checkers use either
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    try:
        connection = connections[DEFAULT_DB_ALIAS]
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        connections[DEFAULT_DB_ALIAS].close()  # reconnect afresh on the next probe
        return f"unreachable: {type(exc).__name__}"
    return None


def _check_migrations() -> str | None:
    try:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:
        return f"unknown: {type(exc).__name__}"
    return f"{len(pending)} pending" if pending else None


def _check_redis() -> str | None:
    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        # One attempt: redis-py's default retries a refused connection with backoff for
        # ~4 s, which would hold a web worker (and outlast a probe's timeout) per probe.
        retry=None,
    )
    try:
        client.ping()
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}"
    finally:
        client.close()
    return None


@require_safe
def readyz(request: HttpRequest):
    checks = {"database": _check_database(), "redis": _check_redis()}
    checks["migrations"] = _check_migrations() if checks["database"] is None else "unknown"
    failing = sorted(name for name, problem in checks.items() if problem)
    report = {name: problem or "ok" for name, problem in checks.items()}
    if failing:
        return problem_response(
            status=503,
            code="not_ready",
            detail="Failing: " + ", ".join(f"{name} ({report[name]})" for name in failing),
            failing=failing,
            checks=report,
        )
    return JsonResponse({"status": "ok", "checks": report})
