"""Sliding-window rate limits in Redis (SPEC §3 "Rate limiting").

Each limit is a sorted set of request timestamps; one Lua script trims the window,
counts and admits atomically, so N concurrent requests against a limit of k let exactly k
through. Time comes from the Redis server, so every web process agrees on the window.
When Redis is unreachable the limiter fails open (the request passes, a metric counts it)
and, for a few seconds, stops asking so an outage does not add a timeout to every request.

One script serves every limit and is sent once per process (EVALSHA, EVAL on NOSCRIPT).
It counts several windows in one call, so a request that must pass two limits costs one
round trip: a handler marked `@settles_api_rate_limit` (idempotent creation) is not counted
by `ApiRateThrottle` up front; the API limit rides along with the first limit the handler
enforces (`rate_limit_enforce`), and any other way out of the handler (a replay, a 400, a
409) counts it alone, so every request still counts once against the API limit.

A throttle that counts only failures (API-key authentication) uses `failure_limit_count`
after the work failed and `failure_limit_known_refusal` before doing it: the latter answers
from what this process learnt at its last counted failure, without a round trip.

Response headers (RateLimitHeadersMiddleware), from the decisions the request met, with no
round trip of their own: each limit is a policy named after its scope (`api`,
`order_create`, `api_key_failures`), sent as the current IETF draft's structured fields
(draft-ietf-httpapi-ratelimit-headers-11)

    RateLimit-Policy: "api";q=600;w=60, "order_create";q=5;w=60
    RateLimit: "api";r=597;t=60, "order_create";r=4;t=60

(q the quota, w the window in seconds; r what is left, t the seconds until a used slot
frees), and as the older RateLimit-Limit / -Remaining / -Reset trio for the tightest of
them (the fewest left), as existing clients read it. A 429 adds Retry-After (= its t).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django_redis import get_redis_connection
from prometheus_client import Counter
from redis.exceptions import NoScriptError
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

# Counts one request against each window in turn, all in one call. A window is counted only
# if every window before it admitted the request (so a request refused by the API limit never
# touches the order limit, and one refused by the order limit still counts against the API
# limit, as two separate limiters in a row would). Stops at the first refusal.
# KEYS: the windows' sorted sets. ARGV: a unique member, then (window ms, limit) per key.
# Returns, per window reached, {admitted (0/1), remaining, ms until a slot frees}.
_SLIDING_WINDOWS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local decisions = {}
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[2 * i])
  local limit = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  local admitted = 0
  if count < limit then
    redis.call('ZADD', key, now, ARGV[1])
    redis.call('PEXPIRE', key, window)
    admitted = 1
  end
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  decisions[i] = {admitted, math.max(limit - count - 1, 0), tonumber(oldest[2]) + window - now}
  if admitted == 0 then
    return decisions
  end
end
return decisions
"""
_SLIDING_WINDOWS_SHA = hashlib.sha1(_SLIDING_WINDOWS.encode(), usedforsecurity=False).hexdigest()

_FAIL_OPEN_PAUSE_SECONDS = 5.0
# Open while Redis is unreachable: requests fail open without asking it.
fail_open_breaker = Breaker(cooldown=lambda: _FAIL_OPEN_PAUSE_SECONDS)


@dataclass(frozen=True)
class RateDecision:
    policy: str  # the limit's scope, the policy's name in the headers
    allowed: bool
    limit: int
    window_seconds: int
    remaining: int
    reset_seconds: int  # until the oldest counted request leaves the window

    def policy_item(self) -> str:
        """This limit as a RateLimit-Policy list member: `"api";q=600;w=60`."""
        return f"{_sf_string(self.policy)};q={self.limit};w={self.window_seconds}"

    def service_limit_item(self) -> str:
        """Where it stands as a RateLimit list member: `"api";r=599;t=60`."""
        return f"{_sf_string(self.policy)};r={self.remaining};t={self.reset_seconds}"


def _sf_string(value: str) -> str:
    """An RFC 8941 String (printable ASCII, with `"` and `\\` escaped)."""
    if not all(" " <= ch <= "~" for ch in value):
        raise ValueError(f"not an RFC 8941 string: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rate_limit_headers(decisions: list[RateDecision]) -> dict[str, str]:
    """The response headers for the limits a request met, in the order it met them."""
    tightest = decisions[0]
    for decision in decisions[1:]:
        if decision.remaining <= tightest.remaining:
            tightest = decision
    return {
        "RateLimit-Policy": ", ".join(decision.policy_item() for decision in decisions),
        "RateLimit": ", ".join(decision.service_limit_item() for decision in decisions),
        "RateLimit-Limit": str(tightest.limit),
        "RateLimit-Remaining": str(tightest.remaining),
        "RateLimit-Reset": str(tightest.reset_seconds),
    }


@dataclass(frozen=True)
class RateWindow:
    """One limit to count a request against: `rate` ('5/60s') for `identity` in `scope`."""

    scope: str
    identity: str
    rate: str


def _key(scope: str, identity: str) -> str:
    # Hash the identity: emails and addresses never appear in Redis key names.
    digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
    return f"{settings.RATE_LIMIT_KEY_PREFIX}:{scope}:{digest}"


def _run_windows_script(keys: list[str], args: list) -> list:
    connection = get_redis_connection("default")
    try:
        return connection.evalsha(_SLIDING_WINDOWS_SHA, len(keys), *keys, *args)
    except NoScriptError:
        # First use on this Redis (or after SCRIPT FLUSH / a restart): EVAL caches it there.
        return connection.eval(_SLIDING_WINDOWS, len(keys), *keys, *args)


def _count_in_windows(windows: list[RateWindow]) -> list[tuple[RateDecision, int]] | None:
    """Count one request against `windows` in one round trip: (decision, ms until a slot
    frees) per window reached, or None when Redis is unreachable (the caller fails open)."""
    if fail_open_breaker.is_open:
        RATE_LIMIT_FAIL_OPEN.inc()
        return None
    limits = [parse_rate(window.rate) for window in windows]
    args: list = [uuid.uuid4().hex]
    for limit, window_seconds in limits:
        args += [window_seconds * 1000, limit]
    try:
        results = _run_windows_script([_key(w.scope, w.identity) for w in windows], args)
    except Exception as exc:
        fail_open_breaker.trip()
        RATE_LIMIT_FAIL_OPEN.inc()
        logger.warning(
            "rate limiter unavailable, failing open",
            extra={"scope": windows[0].scope, "error": type(exc).__name__},
        )
        return None
    decisions = []
    for window, (limit, window_seconds), (admitted, remaining, reset_ms) in zip(
        windows, limits, results, strict=False
    ):
        decision = RateDecision(
            policy=window.scope,
            allowed=bool(admitted),
            limit=limit,
            window_seconds=window_seconds,
            remaining=int(remaining),
            reset_seconds=max(1, -(-int(reset_ms) // 1000)),
        )
        if not decision.allowed:
            RATE_LIMITED.labels(scope=window.scope).inc()
        decisions.append((decision, int(reset_ms)))
    return decisions


def _fail_open_decision(scope: str, rate: str) -> RateDecision:
    limit, window_seconds = parse_rate(rate)
    return RateDecision(scope, True, limit, window_seconds, limit, window_seconds)


def rate_limit_hit(*, scope: str, identity: str, rate: str) -> RateDecision:
    """Count one request of `identity` against `rate` ('5/60s'); says whether it may pass."""
    counted = _count_in_windows([RateWindow(scope, identity, rate)])
    return _fail_open_decision(scope, rate) if counted is None else counted[0][0]


# A failure throttle's refusals as this process learnt them: (scope, identity, rate) -> the
# monotonic time until which the identity has no failure left. Bounded: an attacker cycling
# addresses must not grow it without end; forgetting only costs a round trip.
_known_refusals: dict[tuple[str, str, str], float] = {}
_KNOWN_REFUSALS_MAX = 10_000


def failure_limit_count(*, scope: str, identity: str, rate: str) -> RateDecision:
    """Count one failure of `identity` (one round trip) and remember, in this process, until
    when it has none left, for `failure_limit_known_refusal`."""
    counted = _count_in_windows([RateWindow(scope, identity, rate)])
    if counted is None:
        return _fail_open_decision(scope, rate)
    decision, reset_ms = counted[0]
    if decision.remaining == 0:
        if len(_known_refusals) >= _KNOWN_REFUSALS_MAX:
            _forget_expired_refusals()
        _known_refusals[(scope, identity, rate)] = time.monotonic() + reset_ms / 1000
    return decision


def failure_limit_known_refusal(*, scope: str, identity: str, rate: str) -> RateDecision | None:
    """The refusal of `identity` if this process learnt, at its last counted failure, that it
    has no failure left until later than now; None otherwise. No round trip."""
    blocked_until = _known_refusals.get((scope, identity, rate))
    if blocked_until is None:
        return None
    left = blocked_until - time.monotonic()
    if left <= 0:
        _known_refusals.pop((scope, identity, rate), None)
        return None
    limit, window_seconds = parse_rate(rate)
    RATE_LIMITED.labels(scope=scope).inc()
    return RateDecision(scope, False, limit, window_seconds, 0, max(1, math.ceil(left)))


def _forget_expired_refusals() -> None:
    now = time.monotonic()
    for entry, blocked_until in list(_known_refusals.items()):
        if blocked_until <= now:
            _known_refusals.pop(entry, None)
    if len(_known_refusals) >= _KNOWN_REFUSALS_MAX:
        _known_refusals.clear()


class RateLimited(Throttled):
    default_detail = "Too many requests; retry later."

    def __init__(self, decision: RateDecision) -> None:
        super().__init__(wait=decision.reset_seconds)
        self.decision = decision


def attach_rate_limit_headers(request, decision: RateDecision) -> None:
    """Remember the decision for its policy; RateLimitHeadersMiddleware renders them all."""
    django_request = getattr(request, "_request", request)
    decisions = getattr(django_request, "rate_limit_decisions", None)
    if decisions is None:
        decisions = django_request.rate_limit_decisions = {}
    decisions[decision.policy] = decision


def rate_limit_enforce(request, *, scope: str, identity: str, rate: str) -> RateDecision:
    """Count one request against `rate`, and against the API limit too when that is still
    pending on the request (`settles_api_rate_limit`), in one round trip; 429 when over."""
    django_request = getattr(request, "_request", request)
    windows = [RateWindow(scope, identity, rate)]
    pending = getattr(django_request, "api_rate_limit_pending", None)
    if pending is not None:
        windows.insert(0, pending)
        django_request.api_rate_limit_pending = None
    counted = _count_in_windows(windows)
    if counted is None:
        counted = [(_fail_open_decision(window.scope, window.rate), 0) for window in windows]
    for decision, _ in counted:
        attach_rate_limit_headers(request, decision)
    last, _ = counted[-1]
    if not last.allowed:
        raise RateLimited(last)
    return last


def _api_window(request) -> RateWindow:
    client_pk = getattr(getattr(request, "user", None), "pk", None)
    # Not DRF's get_ident: it believes whatever X-Forwarded-For the client sends.
    identity = f"client:{client_pk}" if client_pk else f"ip:{client_throttle_key(request)}"
    return RateWindow("api", identity, settings.API_RATE_LIMIT)


def api_rate_limit_settle(request) -> None:
    """Count the request against the API limit if nothing has yet (429 when over)."""
    django_request = getattr(request, "_request", request)
    pending = getattr(django_request, "api_rate_limit_pending", None)
    if pending is not None:
        django_request.api_rate_limit_pending = None
        rate_limit_enforce(
            request, scope=pending.scope, identity=pending.identity, rate=pending.rate
        )


def settles_api_rate_limit(handler: Callable) -> Callable:
    """Mark a view handler `(view, request, ...)` that enforces a limit of its own on its main
    path: `ApiRateThrottle` leaves the API limit to ride along with it (one round trip for
    both), and every other way out of the handler counts the API limit alone, as before.
    A 429 from the API limit wins over the handler's own error, as it did up front."""

    @functools.wraps(handler)
    def settling(view: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            response = handler(view, request, *args, **kwargs)
        except Exception:
            api_rate_limit_settle(request)
            raise
        api_rate_limit_settle(request)
        return response

    settling.settles_api_rate_limit = True  # type: ignore[attr-defined]
    return settling


class ApiRateThrottle(BaseThrottle):
    """Per-client limit on every API request (per address for requests without a key)."""

    def allow_request(self, request, view) -> bool:
        window = _api_window(request)
        handler = getattr(view, request.method.lower(), None)
        if getattr(handler, "settles_api_rate_limit", False):
            getattr(request, "_request", request).api_rate_limit_pending = window
            return True
        rate_limit_enforce(request, scope=window.scope, identity=window.identity, rate=window.rate)
        return True


class RateLimitHeadersMiddleware:
    """Writes the rate-limit headers of every decision the request met (module docstring)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        decisions = getattr(request, "rate_limit_decisions", None)
        if decisions:
            for name, value in rate_limit_headers(list(decisions.values())).items():
                response[name] = value
        return response
