"""Domain errors of the orders app, rendered as problem+json by the one exception handler.

Each code's title and explanation page: core/problem_types.py.
"""

from core.problems import DomainError


class OrderNotFound(DomainError):
    status = 404
    code = "not_found"


class OrderNotCancellable(DomainError):
    status = 409
    code = "order_not_cancellable"

    def __init__(self, status: str) -> None:
        super().__init__(
            f"The order is {status}; only pending_payment orders can be cancelled.",
            order_status=status,
        )


class IdempotencyKeyMissing(DomainError):
    status = 400
    code = "idempotency_key_missing"


class IdempotencyKeyInvalid(DomainError):
    status = 400
    code = "idempotency_key_invalid"


class IdempotencyKeyReused(DomainError):
    status = 409
    code = "idempotency_key_reused"


class IdempotencyKeyInUse(DomainError):
    status = 409
    code = "idempotency_key_in_use"
    retry_after_seconds = 1

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}
