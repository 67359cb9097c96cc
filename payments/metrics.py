"""Prometheus metrics of the payment saga."""

from prometheus_client import Counter

SAGA_STEPS = Counter(
    "payments_saga_steps_total", "Saga steps against the provider by outcome", ["step", "outcome"]
)
WEBHOOKS = Counter(
    "payments_webhooks_total",
    "Provider webhooks by outcome (applied, duplicate, ignored, mismatch, payment_id_mismatch, "
    "waiting, rejected_*)",
    ["outcome"],
)
REFUNDS = Counter(
    "payments_refunds_total",
    "Refunds by stage (requested: by the saga for a cancelled order; completed: any refund "
    "the provider reported)",
    ["stage"],
)
# Labels come from PAYMENT_TRANSITIONS only: a bounded set, whatever the provider sends.
PAYMENT_TRANSITIONS = Counter(
    "payments_status_transitions_total",
    "Payment status transitions applied",
    ["from_status", "to_status"],
)
