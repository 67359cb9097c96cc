"""Idempotent creation as a view concern of its own (SPEC §3 "Idempotency", "Rate limiting").

`@idempotent_create(...)` wraps a viewset's `create`: the action itself only calls the
service and renders, on input already parsed, and this module alone decides what happens
around it, in this order:

1. the Idempotency-Key header, then the body: a 400 claims nothing and is not stored;
2. the claim (orders.idempotency): a stored response is replayed, another body with the same
   key is 409 `idempotency_key_reused`, a request still running is 409
   `idempotency_key_in_use` with Retry-After; none of these counts against the limit;
3. the creation limit, counted only for a request that claimed a new key; a limited request
   (or a limiter that fails) releases its claim, and its 429 is not stored;
4. the action: its response is stored with its effects in one transaction, and so are the
   business refusals in `stored_errors`; anything else (5xx) rolls back and frees the key.

First responses and replays carry the same stored bytes, and `Idempotent-Replayed`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast
from uuid import UUID

from django.conf import settings
from django.http import HttpResponse
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer

from clients.models import ApiClient
from core.problems import DomainError
from core.ratelimit import api_rate_limit_settle, settles_api_rate_limit
from core.unit_of_work import UnitOfWork
from orders import metrics
from orders.idempotency import (
    Claim,
    StoredResponse,
    idempotency_claim,
    idempotency_key_parse,
    idempotency_release,
    idempotent_execute,
    request_fingerprint,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"

# create(view, request, validated data) -> the response to store (status, data, Location).
CreateAction = Callable[[Any, Request, dict[str, Any]], Response]
# The same action as one unit of work: adds its statements to the work and returns the
# response, or None when it cannot decide without locks (the action runs instead).
OneRoundTripAction = Callable[[Any, Request, dict[str, Any], UnitOfWork], Response | None]
# Counts one creation for (request, validated data); raises RateLimited (429) when over.
CreationLimit = Callable[[Request, dict[str, Any]], object]


def idempotent_create(
    *,
    input_serializer: type[Serializer],
    limit: CreationLimit,
    stored_errors: tuple[type[DomainError], ...],
    count_outcome: Callable[[int], None],
    in_one_round_trip: OneRoundTripAction | None = None,
) -> Callable[[CreateAction], Callable[..., HttpResponse]]:
    """Make a viewset's `create(self, request, data)` idempotent (see the module docstring).

    `count_outcome` gets the status of every response that ran the action (not replays).
    `in_one_round_trip`, when given and settings.ORDER_CREATE_ONE_ROUND_TRIP is on, is tried
    first (orders.idempotency.idempotent_execute).
    """

    def decorate(action: CreateAction) -> Callable[..., HttpResponse]:
        @functools.wraps(action)
        def create(view: Any, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
            key = idempotency_key_parse(request.headers.get(IDEMPOTENCY_HEADER))
            payload = request.data
            serializer = input_serializer(data=payload)
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
            client = cast(ApiClient, request.user)  # the view's HasApiKey let only clients in
            outcome = idempotency_claim(
                client=client, key=key, fingerprint=request_fingerprint(payload)
            )
            if isinstance(outcome, StoredResponse):
                api_rate_limit_settle(request)  # a replay counts against the API limit alone
                metrics.IDEMPOTENT_REPLAYS.inc()
                return _to_http(outcome, replayed=True)
            # The creation limit and the request's API limit, in one script call.
            _count_or_release(claim=outcome, count=lambda: limit(request, data))
            stored = idempotent_execute(
                claim=outcome,
                operation=lambda: _to_stored(action(view, request, data)),
                stored_errors=stored_errors,
                in_one_round_trip=_one_round_trip(in_one_round_trip, view, request, data),
            )
            count_outcome(stored.status)
            return _to_http(stored, replayed=False)

        # The API limit is counted with the creation limit above, or alone on any other exit.
        return settles_api_rate_limit(create)

    return decorate


def _one_round_trip(
    action: OneRoundTripAction | None, view: Any, request: Request, data: dict[str, Any]
) -> Callable[[UnitOfWork], StoredResponse | None] | None:
    if action is None or not settings.ORDER_CREATE_ONE_ROUND_TRIP:
        return None

    def in_work(work: UnitOfWork) -> StoredResponse | None:
        response = action(view, request, data, work)
        return None if response is None else _to_stored(response)

    return in_work


def _count_or_release(*, claim: Claim, count: Callable[[], object]) -> None:
    try:
        count()
    except BaseException:
        # Limited (429, not stored) or the limiter itself failed (5xx): either way the key
        # must be free for the retry, not held until its lease runs out.
        idempotency_release(claim=claim)
        raise


def _to_stored(response: Response) -> StoredResponse:
    """The action's response as it is stored, sent and replayed: rendered once, here."""
    headers = {"Content-Type": "application/json"}
    if "Location" in response:
        headers["Location"] = response["Location"]
    return StoredResponse(
        status=response.status_code,
        body=JSONRenderer().render(response.data),
        headers=headers,
        order_id=UUID(str(response.data["id"])),
    )


def _to_http(stored: StoredResponse, *, replayed: bool) -> HttpResponse:
    response = HttpResponse(
        stored.body,
        status=stored.status,
        content_type=stored.headers.get("Content-Type", "application/json"),
    )
    if "Location" in stored.headers:
        response["Location"] = stored.headers["Location"]
    response[REPLAYED_HEADER] = "true" if replayed else "false"
    return response
