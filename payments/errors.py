"""Errors of the payments app.

The webhook refusals are DomainErrors: the one exception handler (core/problems.py) renders
them as problem+json with their status and code (titles and explanation pages:
core/problem_types.py). The others never reach a client: the saga retries or records them
(provider failures, a lost race, a payment id bound elsewhere).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from core.problems import DomainError

# --- webhook refusals (SPEC §5) ----------------------------------------------------------


class WebhookSignatureInvalid(DomainError):
    status = 401
    code = "webhook_signature_invalid"


class WebhookMalformed(DomainError):
    status = 400
    code = "webhook_malformed"


class WebhookTooLarge(DomainError):
    status = 413
    code = "payload_too_large"


# --- the provider's answers --------------------------------------------------------------


class ProviderUnavailable(Exception):
    """Technical failure: retry later. Never a reason to cancel an order."""


class ProviderRejected(Exception):
    """The provider understood and said no (4xx)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


# --- the payment state machine -----------------------------------------------------------


class PaymentTransitionNotAllowed(Exception):
    """A move PAYMENT_TRANSITIONS does not allow: refused, never applied."""

    def __init__(self, payment_id: UUID, current: str, target: str) -> None:
        super().__init__(f"payment {payment_id}: {current} -> {target} is not allowed")
        self.current = current
        self.target = target


class PaymentTransitionLost(Exception):
    """The payment was no longer in the status the caller read: someone else moved it."""


class ProviderPaymentIdTaken(Exception):
    """The provider's payment id already belongs to another order's payment."""

    def __init__(self, provider_payment_id: str, owner_order_id: UUID | None) -> None:
        owner = f"order {owner_order_id}" if owner_order_id else "another order"
        super().__init__(f"provider payment id {provider_payment_id!r} already belongs to {owner}")
        self.provider_payment_id = provider_payment_id
        self.owner_order_id = owner_order_id
