"""Throttle and audit of staff logins, on django-axes (settings: AXES_*, LOGIN_* env vars).

An admin login costs about a second of CPU in the password hasher, so guessing must be
refused before the hasher runs: `axes.backends.AxesStandaloneBackend` stands first in
AUTHENTICATION_BACKENDS and stops `authenticate()` for a locked address or username; the
failures live in PostgreSQL (axes' AccessAttempt), so every gunicorn worker sees them.

What this module adds to the library:
- the address is `client_throttle_key` (X-Forwarded-For trusted only as far as NUM_PROXIES);
- a successful login clears that username's failures only. Axes would also clear every
  failure recorded from the address, so anyone holding one valid account could log in
  between guesses and never be locked out while guessing other staff's passwords;
- one structured WARNING log line per failure, lockout and refused attempt (the rows in
  AccessFailureLog are the durable audit; the log line is what alerting reads);
- the 429 page says when the caller may retry, and `Retry-After` says it to machines.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from core.client_address import UNKNOWN, client_throttle_key

logger = logging.getLogger(__name__)

LOCKOUT_TEMPLATE = "admin/login_throttled.html"


def login_client_address(request: HttpRequest) -> str | None:
    """AXES_CLIENT_IP_CALLABLE. None (stored as NULL) when the peer address is not an IP."""
    address = client_throttle_key(request)
    return None if address == UNKNOWN else address


class LoginThrottleHandler(AxesDatabaseHandler):
    """Axes' database handler, with per-username reset on success and structured audit logs."""

    def user_login_failed(self, sender, credentials: dict, request=None, **kwargs):
        # Set by AxesStandaloneBackend when it refused the attempt before any password check.
        refused_while_locked = bool(getattr(request, "axes_locked_out", False))
        super().user_login_failed(sender, credentials, request, **kwargs)
        if request is None:
            return
        username = get_client_username(request, credentials)
        fields = {
            "username": username,
            "client_ip": request.axes_ip_address,
            "path": request.axes_path_info,
        }
        if refused_while_locked:
            logger.warning(
                "login refused: address or username locked out",
                extra={**fields, "event": "login_refused_locked_out"},
            )
            return
        locked_now = bool(request.axes_locked_out)
        logger.warning(
            "login locked out after repeated failures" if locked_now else "login failed",
            extra={
                **fields,
                "event": "login_locked_out" if locked_now else "login_failed",
                "failures": request.axes_failures_since_start,
                "failure_limit": get_failure_limit(request, credentials),
                "locked_out": locked_now,
            },
        )

    def reset_user_attempts(self, request: HttpRequest, credentials: dict | None = None) -> int:
        """On a successful login: forget this username's failures, from every address, only."""
        username = get_client_username(request, credentials)
        if not username:
            return 0
        count, _ = AccessAttempt.objects.filter(username=username).delete()
        return count


def lockout_ends_at(request: HttpRequest, credentials: dict | None) -> datetime:
    """When the lock on this request's address or username lifts (the later of the two).

    A lock holds while the failures recorded in the cool-off window reach the limit; it
    lifts when the newest failure without which the newer ones stay under the limit ages
    out of the window.
    """
    cool_off = get_cool_off(request) or timedelta(0)
    limit = get_failure_limit(request, credentials)
    ends = timezone.now()
    for attempts in LoginThrottleHandler().get_user_attempts(request, credentials):
        total = 0
        for attempt_time, failures in attempts.order_by("-attempt_time").values_list(
            "attempt_time", "failures_since_start"
        ):
            total += failures
            if total >= limit:
                ends = max(ends, attempt_time + cool_off)
                break
    return ends


def lockout_response(
    request: HttpRequest,
    original_response: HttpResponse | None = None,
    credentials: dict | None = None,
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: a 429 admin page that says when to retry, with Retry-After."""
    retry_at = lockout_ends_at(request, credentials)
    retry_after = max(1, math.ceil((retry_at - timezone.now()).total_seconds()))
    context = {
        **admin.site.each_context(request),
        "title": "Too many failed logins",
        "retry_at": retry_at,
        "retry_after_seconds": retry_after,
        "retry_after_minutes": math.ceil(retry_after / 60),
        "failure_limit": get_failure_limit(request, credentials),
    }
    response = render(request, LOCKOUT_TEMPLATE, context, status=429)
    response["Retry-After"] = str(retry_after)
    return response
