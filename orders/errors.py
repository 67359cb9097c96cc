"""Domain errors of the orders app, rendered as problem+json by the one exception handler."""

from core.problems import DomainError


class OrderNotFound(DomainError):
    status = 404
    code = "not_found"
    title = "Not found"


class OrderNotCancellable(DomainError):
    status = 409
    code = "order_not_cancellable"
    title = "The order can no longer be cancelled"

    def __init__(self, status: str) -> None:
        super().__init__(
            f"The order is {status}; only pending_payment orders can be cancelled.",
            order_status=status,
        )


class IdempotencyKeyMissing(DomainError):
    status = 400
    code = "idempotency_key_missing"
    title = "Idempotency-Key header required"


class IdempotencyKeyInvalid(DomainError):
    status = 400
    code = "idempotency_key_invalid"
    title = "Idempotency-Key header invalid"


class IdempotencyKeyReused(DomainError):
    status = 409
    code = "idempotency_key_reused"
    title = "Idempotency-Key already used with another request body"


class IdempotencyKeyInUse(DomainError):
    status = 409
    code = "idempotency_key_in_use"
    title = "A request with this Idempotency-Key is still being processed"
    retry_after_seconds = 1

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}
