"""Domain errors of the catalog, rendered as problem+json by the one exception handler.

Each code's title and explanation page: core/problem_types.py.
"""

from core.problems import DomainError


class StaleStock(DomainError):
    status = 409
    code = "stale_stock"


class StockAdjustmentInvalid(DomainError):
    status = 409
    code = "stock_adjustment_invalid"


class ProductUnavailable(DomainError):
    status = 422
    code = "product_unavailable"

    def __init__(self, product_ids: list[str]) -> None:
        super().__init__(
            "These products are unknown or inactive: " + ", ".join(product_ids),
            product_ids=product_ids,
        )


class InsufficientStock(DomainError):
    status = 409
    code = "insufficient_stock"

    def __init__(self, shortages: list[dict]) -> None:
        # shortages: [{"product_id": str, "requested": int, "available": int}]
        super().__init__(
            "Not enough stock for: "
            + ", ".join(f"{s['product_id']} ({s['available']} available)" for s in shortages),
            products=shortages,
        )
