"""Prometheus metrics of the payment saga."""

from prometheus_client import Counter

SAGA_STEPS = Counter(
    "payments_saga_steps_total", "Saga steps against the provider by outcome", ["step", "outcome"]
)
WEBHOOKS = Counter(
    "payments_webhooks_total",
    "Provider webhooks by outcome (applied, duplicate, ignored, mismatch, waiting, rejected_*)",
    ["outcome"],
)
REFUNDS = Counter("payments_refunds_total", "Refunds of payments for cancelled orders", ["stage"])
