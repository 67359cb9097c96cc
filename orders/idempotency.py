"""Idempotent order creation (SPEC §3 "Idempotency").

A request claims its (client, key) by INSERTing an `in_progress` record in its own short
transaction; the unique constraint decides the single winner. The winner runs the
operation and, in the same transaction, stores the response it produced, so the order and
its stored response commit or vanish together. Losers get the stored response (replay),
`idempotency_key_in_use` while the winner runs, or `idempotency_key_reused` for another body.
A winner that fails releases its claim; one that crashes leaves a claim whose lease
(`IDEMPOTENCY_LEASE_SECONDS`) expires, after which a retry takes it over.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from clients.models import ApiClient
from core.problems import PROBLEM_CONTENT_TYPE, DomainError, problem_bytes, problem_for
from core.unit_of_work import Phase, Refusal, Statement, UnitOfWork, WorkRefused
from orders import metrics
from orders.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyInvalid,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
)
from orders.models import IdempotencyRecord, IdempotencyStatus

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class StoredResponse:
    """A response exactly as it is (re)played: status, body bytes and headers."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    order_id: UUID | None = None

    @classmethod
    def from_problem(cls, error: DomainError) -> StoredResponse:
        """A business refusal, stored as the exception handler would have answered it."""
        problem = problem_for(error)
        return cls(
            status=problem.status,
            body=problem_bytes(problem),
            headers={"Content-Type": PROBLEM_CONTENT_TYPE},
        )


@dataclass(frozen=True)
class Claim:
    record_id: UUID
    token: UUID


def idempotency_key_parse(raw: str | None) -> str:
    """Validate the header; the RFC 8941 quoted form ("abc") equals the bare form."""
    if raw is None:
        raise IdempotencyKeyMissing("Send an Idempotency-Key header with every order creation.")
    key = raw
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not key or len(key) > MAX_KEY_LENGTH or not all(" " <= ch <= "~" for ch in key):
        raise IdempotencyKeyInvalid(
            f"Idempotency-Key must be 1–{MAX_KEY_LENGTH} printable ASCII characters."
        )
    return key


def request_fingerprint(payload: Any) -> str:
    """SHA-256 of the canonical JSON body: key order and whitespace do not matter."""
    # ensure_ascii: a lone surrogate ("\ud800" is valid JSON) cannot be encoded as UTF-8,
    # but its \u escape can, so any parsed body has a fingerprint.
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


_CLAIM_SQL = """
INSERT INTO orders_idempotencyrecord
    (id, client_id, key, fingerprint, status, claim_token, locked_until,
     response_headers, created_at, expires_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, '{}'::jsonb, %s, %s)
ON CONFLICT (client_id, key) DO NOTHING
RETURNING id
"""


def idempotency_claim(*, client: ApiClient, key: str, fingerprint: str) -> Claim | StoredResponse:
    """Claim the key for this request, or return the response stored for it.

    Raises IdempotencyKeyReused (other body) or IdempotencyKeyInUse (still running).
    Precondition: outside any transaction (the claim must be visible to concurrent requests).
    """
    for _ in range(5):  # each pass ends in a decision unless a racing purge/release intervenes
        now = timezone.now()
        token = uuid.uuid4()
        record_id = _claim_insert(client=client, key=key, fingerprint=fingerprint, token=token)
        if record_id is not None:
            return Claim(record_id=record_id, token=token)
        existing = IdempotencyRecord.objects.filter(client=client, key=key).first()
        if existing is None:
            continue  # released or purged since our INSERT: try to claim again
        decided = _claim_decide(existing=existing, fingerprint=fingerprint, token=token, now=now)
        if decided is not None:
            return decided
    raise IdempotencyKeyInUse("Retry after the first request with this key finishes.")


def _claim_insert(*, client: ApiClient, key: str, fingerprint: str, token: UUID) -> UUID | None:
    """INSERT … ON CONFLICT DO NOTHING: the unique (client, key) picks the single winner.

    One autocommit statement, so one round trip: it commits by itself (no BEGIN/COMMIT
    around it), which makes the claim visible to concurrent requests at once.
    """
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL,
            [
                uuid.uuid4(),
                client.pk,
                key,
                fingerprint,
                IdempotencyStatus.IN_PROGRESS,
                token,
                now + timedelta(seconds=settings.IDEMPOTENCY_LEASE_SECONDS),
                now,
                now + timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL),
            ],
        )
        inserted = cursor.fetchone()
    return inserted[0] if inserted else None


def _claim_decide(
    *, existing: IdempotencyRecord, fingerprint: str, token: UUID, now
) -> Claim | StoredResponse | None:
    """What a request meets when the key is taken: a replay, a conflict, or a takeover of a
    dead request's claim (None: the claim moved meanwhile, try again)."""
    if existing.fingerprint != fingerprint:
        metrics.IDEMPOTENCY_CONFLICTS.labels(code=IdempotencyKeyReused.code).inc()
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with a different request body; use a new key."
        )
    if existing.status == IdempotencyStatus.COMPLETED:
        return StoredResponse(
            status=existing.response_status or 500,
            body=bytes(existing.response_body or b""),
            headers=dict(existing.response_headers),
            order_id=existing.order_id,
        )
    if existing.locked_until > now:
        metrics.IDEMPOTENCY_CONFLICTS.labels(code=IdempotencyKeyInUse.code).inc()
        raise IdempotencyKeyInUse("Retry after the first request with this key finishes.")
    # The request holding the claim died without releasing it: take it over.
    lease = timedelta(seconds=settings.IDEMPOTENCY_LEASE_SECONDS)
    taken = IdempotencyRecord.objects.filter(
        pk=existing.pk,
        status=IdempotencyStatus.IN_PROGRESS,
        claim_token=existing.claim_token,
    ).update(claim_token=token, locked_until=now + lease)
    return Claim(record_id=existing.pk, token=token) if taken else None


class ClaimLost(IdempotencyKeyInUse):
    """Our lease expired and another request took the key over; our work is rolled back."""


def idempotency_complete(*, claim: Claim, response: StoredResponse) -> None:
    """Store the outcome. Precondition: inside the transaction that produced it."""
    stored = IdempotencyRecord.objects.filter(
        pk=claim.record_id, claim_token=claim.token, status=IdempotencyStatus.IN_PROGRESS
    ).update(
        status=IdempotencyStatus.COMPLETED,
        response_status=response.status,
        response_body=response.body,
        response_headers=response.headers,
        order_id=response.order_id,
        locked_until=timezone.now(),
    )
    if stored != 1:
        raise ClaimLost("This request took too long and another one with its key took over.")


def idempotency_release(*, claim: Claim) -> None:
    """Forget an unfinished claim so that a retry runs afresh (5xx, 400, 429 paths)."""
    IdempotencyRecord.objects.filter(
        pk=claim.record_id, claim_token=claim.token, status=IdempotencyStatus.IN_PROGRESS
    ).delete()


def idempotent_execute(
    *,
    claim: Claim,
    operation: Callable[[], StoredResponse],
    stored_errors: tuple[type[DomainError], ...],
    in_one_round_trip: Callable[[UnitOfWork], StoredResponse | None] | None = None,
) -> StoredResponse:
    """Run `operation` and store its response atomically with its effects.

    Business refusals listed in `stored_errors` are stored (and replayed) too; their effects
    roll back to a savepoint. Anything else rolls everything back and releases the claim.

    With `in_one_round_trip`, that form runs first: it adds the operation's statements to a
    unit of work and returns the response (None: it cannot decide without locks), and the
    response is stored by one more statement of the same work, sent in one round trip. A
    refused work (a guard saw the data change since it was read) falls back to `operation`,
    which takes its locks first and decides with them held.
    """
    if in_one_round_trip is not None:
        response = _execute_in_one_round_trip(claim=claim, operation=in_one_round_trip)
        if response is not None:
            return response
    try:
        with transaction.atomic():
            try:
                with transaction.atomic():
                    response = operation()
            except stored_errors as error:
                response = StoredResponse.from_problem(error)
            idempotency_complete(claim=claim, response=response)
        return response
    except BaseException:
        idempotency_release(claim=claim)
        raise


# The response stored on the claim, in the work that produced it. A unit of work is one
# query string, so its statements cannot look at a row count and stop: `1 / count(*)`
# divides by zero when the claim is no longer ours (a takeover changed its token), and that
# error rolls the whole work back. It is the work's first statement (CLAIM phase).
_COMPLETE_CLAIM_SQL = """
WITH stored AS (
    UPDATE orders_idempotencyrecord
       SET status = %s, response_status = %s, response_body = %s, response_headers = %s,
           order_id = %s, locked_until = statement_timestamp()
     WHERE id = %s AND claim_token = %s AND status = %s
 RETURNING 1)
SELECT 1 / count(*) FROM stored"""
_COMPLETE_CLAIM = "orders.idempotency_complete"


def _execute_in_one_round_trip(
    *, claim: Claim, operation: Callable[[UnitOfWork], StoredResponse | None]
) -> StoredResponse | None:
    """The response, stored; None when the caller must run the locking path instead (the
    claim is still ours then). Raises ClaimLost, or what the operation raised (claim released)."""
    work = UnitOfWork()
    try:
        response = operation(work)
        if response is None:
            return None
        work.add(_complete_claim_statement(claim=claim, response=response))
        work.commit()
    except WorkRefused as refused:
        if refused.statement == _COMPLETE_CLAIM:
            raise ClaimLost(
                "This request took too long and another one with its key took over."
            ) from refused
        return None
    except BaseException:
        idempotency_release(claim=claim)
        raise
    return response


def _complete_claim_statement(*, claim: Claim, response: StoredResponse) -> Statement:
    headers_field = IdempotencyRecord._meta.get_field("response_headers")
    return Statement(
        name=_COMPLETE_CLAIM,
        sql=_COMPLETE_CLAIM_SQL,
        params=(
            IdempotencyStatus.COMPLETED,
            response.status,
            response.body,
            headers_field.get_db_prep_save(response.headers, connection),
            response.order_id,
            claim.record_id,
            claim.token,
            IdempotencyStatus.IN_PROGRESS,
        ),
        phase=Phase.CLAIM,
        refusals=(Refusal(sqlstate="22012"),),  # division_by_zero: the claim is lost
    )


def idempotency_purge_expired(*, batch_size: int = 1000) -> int:
    """Delete expired records in batches; returns how many went."""
    deleted_total = 0
    while True:
        ids = list(
            IdempotencyRecord.objects.filter(expires_at__lt=timezone.now())
            .exclude(status=IdempotencyStatus.IN_PROGRESS, locked_until__gt=timezone.now())
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return deleted_total
        deleted, _ = IdempotencyRecord.objects.filter(pk__in=ids).delete()
        deleted_total += deleted
