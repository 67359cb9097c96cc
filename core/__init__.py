"""The ground floor: cross-cutting HTTP and infrastructure code that every app may use.

Errors and problem+json, request ids, JSON logs, pagination, the rate limiter, health,
metrics, environment parsing, client addresses, the production guards. It imports no
domain app and not the wiring (`orders_project`): import-linter enforces it (pyproject).
"""
