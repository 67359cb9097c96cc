"""Domain errors of the catalog, rendered as problem+json by the one exception handler."""

from orders_project.common.problems import DomainError


class StaleStock(DomainError):
    status = 409
    code = "stale_stock"
    title = "Stock changed since the form was opened"


class StockAdjustmentInvalid(DomainError):
    status = 409
    code = "stock_adjustment_invalid"
    title = "The stock adjustment would make stock negative"
