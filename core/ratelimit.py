"""Sliding-window rate limits in Redis (SPEC §3 "Rate limiting").

Each limit is a sorted set of request timestamps; one Lua script trims the window,
counts and admits atomically, so N concurrent requests against a limit of k let exactly k
through. Time comes from the Redis server, so every web process agrees on the window.
When Redis is unreachable the limiter fails open (the request passes, a metric counts it)
and, for a few seconds, stops asking so an outage does not add a timeout to every request.

`rate_limit_peek` asks the same question without counting: a throttle that counts only
failures (API-key authentication) refuses an address that is already over its limit before
doing any work, and counts with `rate_limit_hit` once the work has failed.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django_redis import get_redis_connection
from prometheus_client import Counter
from rest_framework.exceptions import Throttled
from rest_framework.throttling import BaseThrottle

from core.breaker import Breaker
from core.client_address import client_throttle_key
from core.env import parse_rate

logger = logging.getLogger(__name__)

RATE_LIMITED = Counter("orders_rate_limited_requests_total", "Requests refused with 429", ["scope"])
RATE_LIMIT_FAIL_OPEN = Counter(
    "orders_rate_limiter_fail_open_total", "Requests let through because Redis was unreachable"
)

# Both scripts start the same way: Redis time in ms, the window trimmed, the rest counted.
# KEYS[1]: the window's sorted set. ARGV: window in ms, limit (, a unique member).
_TRIM_AND_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
"""

# Counts one request if it fits. Returns {admitted (0/1), remaining, ms until a slot frees}.
_SLIDING_WINDOW = (
    _TRIM_AND_COUNT
    + """
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {1, limit - count - 1, tonumber(oldest[2]) + window - now}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, 0, tonumber(oldest[2]) + window - now}
"""
)

# The same window, only read. Returns {under the limit (0/1), remaining, ms until a slot
# frees (0 when none is used)}.
_SLIDING_WINDOW_PEEK = (
    _TRIM_AND_COUNT
    + """
if count == 0 then
  return {1, limit, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local admitted = 0
if count < limit then
  admitted = 1
end
return {admitted, math.max(limit - count, 0), tonumber(oldest[2]) + window - now}
"""
)

_FAIL_OPEN_PAUSE_SECONDS = 5.0
# Open while Redis is unreachable: requests fail open without asking it.
fail_open_breaker = Breaker(cooldown=lambda: _FAIL_OPEN_PAUSE_SECONDS)


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int  # until the oldest counted request leaves the window

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }


def _key(scope: str, identity: str) -> str:
    # Hash the identity: emails and addresses never appear in Redis key names.
    digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
    return f"{settings.RATE_LIMIT_KEY_PREFIX}:{scope}:{digest}"


def _run_window_script(*, script: str, scope: str, key: str, args: list) -> list | None:
    """Run one limiter script; None when Redis is unreachable (the caller fails open)."""
    if fail_open_breaker.is_open:
        RATE_LIMIT_FAIL_OPEN.inc()
        return None
    try:
        connection = get_redis_connection("default")
        return connection.eval(script, 1, key, *args)
    except Exception as exc:
        fail_open_breaker.trip()
        RATE_LIMIT_FAIL_OPEN.inc()
        logger.warning(
            "rate limiter unavailable, failing open",
            extra={"scope": scope, "error": type(exc).__name__},
        )
        return None


def _decision(result: list, limit: int) -> RateDecision:
    admitted, remaining, reset_ms = result
    return RateDecision(
        allowed=bool(admitted),
        limit=limit,
        remaining=int(remaining),
        reset_seconds=max(1, -(-int(reset_ms) // 1000)),
    )


def rate_limit_hit(*, scope: str, identity: str, rate: str) -> RateDecision:
    """Count one request of `identity` against `rate` ('5/60s'); says whether it may pass."""
    limit, window_seconds = parse_rate(rate)
    result = _run_window_script(
        script=_SLIDING_WINDOW,
        scope=scope,
        key=_key(scope, identity),
        args=[window_seconds * 1000, limit, uuid.uuid4().hex],
    )
    if result is None:
        return RateDecision(True, limit, limit, window_seconds)
    decision = _decision(result, limit)
    if not decision.allowed:
        RATE_LIMITED.labels(scope=scope).inc()
    return decision


def rate_limit_peek(*, scope: str, identity: str, rate: str) -> RateDecision:
    """Whether `identity` is still under `rate`, without counting anything."""
    limit, window_seconds = parse_rate(rate)
    result = _run_window_script(
        script=_SLIDING_WINDOW_PEEK,
        scope=scope,
        key=_key(scope, identity),
        args=[window_seconds * 1000, limit],
    )
    if result is None:
        return RateDecision(True, limit, limit, window_seconds)
    decision = _decision(result, limit)
    if not decision.allowed:
        RATE_LIMITED.labels(scope=scope).inc()
    return decision


class RateLimited(Throttled):
    default_detail = "Too many requests; retry later."

    def __init__(self, decision: RateDecision) -> None:
        super().__init__(wait=decision.reset_seconds)
        self.decision = decision


def attach_rate_limit_headers(request, decision: RateDecision) -> None:
    """Remember the tightest decision; RateLimitHeadersMiddleware copies it to the response."""
    django_request = getattr(request, "_request", request)
    current = getattr(django_request, "rate_limit_decision", None)
    if current is None or decision.remaining <= current.remaining:
        django_request.rate_limit_decision = decision


def rate_limit_enforce(request, *, scope: str, identity: str, rate: str) -> RateDecision:
    decision = rate_limit_hit(scope=scope, identity=identity, rate=rate)
    attach_rate_limit_headers(request, decision)
    if not decision.allowed:
        raise RateLimited(decision)
    return decision


class ApiRateThrottle(BaseThrottle):
    """Per-client limit on every API request (per address for requests without a key)."""

    def allow_request(self, request, view) -> bool:
        client_pk = getattr(getattr(request, "user", None), "pk", None)
        # Not DRF's get_ident: it believes whatever X-Forwarded-For the client sends.
        identity = f"client:{client_pk}" if client_pk else f"ip:{client_throttle_key(request)}"
        rate_limit_enforce(request, scope="api", identity=identity, rate=settings.API_RATE_LIMIT)
        return True


class RateLimitHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        decision = getattr(request, "rate_limit_decision", None)
        if decision is not None:
            for name, value in decision.headers().items():
                response[name] = value
        return response
