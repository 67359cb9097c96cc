"""Prometheus metrics of the orders app (multiprocess-safe counters)."""

from prometheus_client import Counter

ORDERS_CREATED = Counter(
    "orders_created_total",
    "Order creation requests by outcome",
    ["outcome"],  # created, insufficient_stock, product_unavailable, validation_error, ...
)
ORDER_TRANSITIONS = Counter(
    "orders_status_transitions_total", "Order status transitions", ["from_status", "to_status"]
)
STOCK_CONFLICTS = Counter(
    "orders_stock_reservation_conflicts_total", "Orders refused for insufficient stock"
)
IDEMPOTENT_REPLAYS = Counter(
    "orders_idempotent_replays_total", "Responses replayed from an idempotency record"
)
IDEMPOTENCY_CONFLICTS = Counter(
    "orders_idempotency_conflicts_total", "Idempotency-Key conflicts", ["code"]
)
ORDERS_EXPIRED = Counter("orders_expired_total", "Unpaid orders cancelled at their deadline")
