"""Every problem type the service (and its nginx) can answer with: the one registry.

A problem+json body's `type` is the relative URI `/problems/<code>` (relative, so that a
stored response replays byte for byte whatever Host the client used), and the service
serves a page there (core/problem_pages.py) explaining the error and what to do about it.
Each code's `title` here is the only title its bodies carry (RFC 9457: the title belongs
to the type, not to one occurrence); `detail` says what happened this time.

The domain codes live here too, as data: the ground floor imports no app, and a
DomainError subclass whose code is missing here fails at import (core/problems.py).
deploy/nginx/nginx.conf writes its own bodies by hand with the same types and titles;
tests/common/test_problem_types.py checks that every code any of them can emit is here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROBLEM_TYPE_PATH = "/problems/"


@dataclass(frozen=True)
class ProblemType:
    code: str
    title: str
    # The status it is sent with; None when it varies (only the catch-all `error`).
    status: int | None
    # What happened, then what the client should do, for the page (plain text).
    meaning: str
    action: str
    # Members beyond type/title/status/detail/code, name -> what it holds.
    members: dict[str, str] = field(default_factory=dict)
    # Sent by nginx in front of the service rather than by the service itself.
    from_proxy: bool = False

    @property
    def uri(self) -> str:
        return problem_type_uri(self.code)


def problem_type_uri(code: str) -> str:
    """The `type` of a problem with this code: a relative URI the service serves."""
    return PROBLEM_TYPE_PATH + code


_RETRY_SAME_KEY = (
    "Retrying an order creation with the same Idempotency-Key and body is always safe: it "
    "either runs afresh or replays the stored outcome."
)

_TYPES = (
    # ------------------------------------------------------------- request as sent
    ProblemType(
        "bad_request",
        "Bad request",
        400,
        "The request could not be read: an unknown Host header, a path holding characters "
        "that cannot be processed (NUL, unpaired surrogates), too many query parameters, or "
        "a request line or header the server could not parse.",
        "Fix the request; sending the same bytes again gets the same answer. Do not retry "
        "unchanged.",
    ),
    ProblemType(
        "validation_error",
        "The request is not valid",
        400,
        "The body or query string was read but some values are wrong: a field missing or "
        "of the wrong type, a quantity outside 1–1000, a product listed twice, a page size "
        "outside 1–100, a malformed cursor, or a body that is not a JSON object.",
        "Correct each field named in `errors` and send the request again. The failed "
        "request changed nothing (an order creation's Idempotency-Key stays unused).",
        members={
            "errors": 'A list of {"field", "message"}; `field` is a path such as '
            '"items[0].quantity", empty for the body as a whole.',
        },
    ),
    ProblemType(
        "length_required",
        "Length required",
        411,
        "The request body was sent with chunked transfer encoding to a server that cannot "
        "de-chunk it.",
        "Send the body with a Content-Length header.",
    ),
    ProblemType(
        "payload_too_large",
        "Request body too large",
        413,
        "The request body is over the limit (by default 1 MiB for the API, 64 KiB for "
        "payment webhooks). Nothing was changed.",
        "Send a smaller body (an order holds at most 50 items). Do not retry unchanged.",
    ),
    ProblemType(
        "unsupported_media_type",
        "Unsupported media type",
        415,
        "The request body's Content-Type is not one the endpoint reads.",
        "Send the body as JSON with `Content-Type: application/json`.",
    ),
    ProblemType(
        "not_acceptable",
        "Not acceptable",
        406,
        "The Accept header asks for a representation the endpoint cannot produce.",
        "Accept `application/json` (errors come as `application/problem+json`).",
    ),
    ProblemType(
        "method_not_allowed",
        "Method not allowed",
        405,
        "The endpoint exists but does not support this HTTP method.",
        "Use one of the methods the `Allow` response header lists.",
    ),
    ProblemType(
        "not_found",
        "Not found",
        404,
        "Nothing is here: an unknown URL, a product that is unknown or not for sale, or an "
        "order that does not exist or belongs to another API client (the two look the same "
        "on purpose).",
        "Check the id and the URL (API paths end with a slash). An order is visible only "
        "with the API key that created it.",
    ),
    # ------------------------------------------------------------- who is calling
    ProblemType(
        "not_authenticated",
        "Authentication required",
        401,
        "The endpoint needs an API key and the request carried none.",
        "Send your key in the `X-API-Key` header. Keys are issued by the shop's staff.",
    ),
    ProblemType(
        "authentication_failed",
        "Invalid API key",
        401,
        "The `X-API-Key` header holds a key that is unknown or has been revoked.",
        "Check the key (it is shown once, when it is created) or ask the shop's staff for "
        "a new one. Repeated failures from one address are refused with `rate_limited`.",
    ),
    ProblemType(
        "permission_denied",
        "Permission denied",
        403,
        "The request was understood but is not allowed, e.g. /metrics from outside the "
        "configured scraper networks.",
        "Do not retry: the answer will not change for this caller.",
    ),
    ProblemType(
        "rate_limited",
        "Too many requests",
        429,
        "A rate limit is used up: the per-client API limit, the per-customer order-creation "
        "limit, the limit on failed API-key lookups per address, or the reverse proxy's "
        "per-address flood guard. Nothing was done (an order creation's key stays free).",
        "Wait the number of seconds in `Retry-After`, then retry (the same Idempotency-Key "
        "is fine). `RateLimit-Policy` and `RateLimit` name each limit, its quota and window, "
        "and what is left; pace requests by them to avoid this answer.",
    ),
    # ------------------------------------------------------------- orders and stock
    ProblemType(
        "product_unavailable",
        "Some products are unknown or not for sale",
        422,
        "At least one product of the order is unknown or inactive. No stock was reserved "
        "and no order was created; the answer is stored under the Idempotency-Key.",
        "Remove or replace the products in `product_ids` and send the order with a new "
        "Idempotency-Key (the same key replays this answer).",
        members={"product_ids": "The ids of the unknown or inactive products."},
    ),
    ProblemType(
        "insufficient_stock",
        "Not enough stock",
        409,
        "At least one line asks for more units than are in stock. Nothing was reserved (all "
        "lines or none) and no order was created; the answer is stored under the "
        "Idempotency-Key.",
        "Lower the quantities to what `products` shows as available (or drop those lines) "
        "and send the order with a new Idempotency-Key (the same key replays this answer).",
        members={
            "products": 'One {"product_id", "requested", "available"} per short line.',
        },
    ),
    ProblemType(
        "order_not_cancellable",
        "The order can no longer be cancelled",
        409,
        "Only orders in `pending_payment` can be cancelled; this one is already paid or "
        "refunded. (Cancelling a cancelled order is not an error: it answers 200.)",
        "Do not retry. A paid order is refunded through the shop, not through this API.",
        members={"order_status": "The order's status when the cancel was refused."},
    ),
    ProblemType(
        "stale_stock",
        "Stock changed since the form was opened",
        409,
        "A staff stock edit was based on a stock level that orders have changed since.",
        "Reload the product and enter the change again.",
    ),
    ProblemType(
        "stock_adjustment_invalid",
        "The stock adjustment would make stock negative",
        409,
        "A staff stock edit would take more units out than are in stock now.",
        "Reload the product and enter a stock that is not below what orders have taken.",
        members={"current_stock": "The product's stock now."},
    ),
    # ------------------------------------------------------------- idempotency
    ProblemType(
        "idempotency_key_missing",
        "Idempotency-Key header required",
        400,
        "Creating an order needs an `Idempotency-Key` header, so that a retry can never "
        "create a second order.",
        "Generate a unique key per order (a UUID is fine), send it as `Idempotency-Key`, "
        "and reuse it for every retry of that same order.",
    ),
    ProblemType(
        "idempotency_key_invalid",
        "Idempotency-Key header invalid",
        400,
        "The `Idempotency-Key` is empty, longer than 255 characters or not printable ASCII.",
        'Send 1–255 printable ASCII characters (a UUID is fine); the quoted form `"abc"` '
        "equals the bare one.",
    ),
    ProblemType(
        "idempotency_key_reused",
        "Idempotency-Key already used with another request body",
        409,
        "This API client already used the key for a request with a different body. Nothing "
        "changed.",
        "Use a new key for a new order. To retry the earlier order, send its original body "
        "with this key. " + _RETRY_SAME_KEY,
    ),
    ProblemType(
        "idempotency_key_in_use",
        "A request with this Idempotency-Key is still being processed",
        409,
        "An earlier request with the same key and body has not finished yet. This one did "
        "nothing and was not counted against the order-creation limit.",
        "Wait the seconds in `Retry-After` and send the same request again: you get the "
        "first request's outcome. " + _RETRY_SAME_KEY,
    ),
    # ------------------------------------------------------------- payment webhooks
    ProblemType(
        "webhook_signature_invalid",
        "Webhook signature missing or invalid",
        401,
        "The webhook's `webhook-signature` is missing, matches none of the configured "
        "secrets, or its `webhook-timestamp` is more than 300 s away from now.",
        "Sign `{webhook-id}.{webhook-timestamp}.{raw body}` with HMAC-SHA256 and the shared "
        "secret (Standard Webhooks), send it fresh, and check that both sides hold the same "
        "secret.",
    ),
    ProblemType(
        "webhook_malformed",
        "Webhook headers or body malformed",
        400,
        "A webhook header is missing or malformed (`webhook-id`, a `webhook-timestamp` "
        "that is not whole seconds), or the body is not the expected JSON event.",
        "Send the Standard Webhooks headers and a body of the documented shape; resending "
        "the same delivery unchanged gets the same answer.",
    ),
    # ------------------------------------------------------------- the service's state
    ProblemType(
        "service_unavailable",
        "Service unavailable",
        503,
        "The service cannot answer for a moment (e.g. the database is restarting). The "
        "request changed nothing.",
        "Retry after the seconds in `Retry-After`, with the same Idempotency-Key for an "
        "order creation.",
    ),
    ProblemType(
        "not_ready",
        "Service not ready",
        503,
        "The readiness probe found a dependency failing: the database, Redis, or "
        "migrations not applied.",
        "Route traffic elsewhere until /readyz answers 200; `failing` names the parts.",
        members={
            "failing": "The names of the failing checks.",
            "checks": 'Every check and its state ("ok" or what failed).',
        },
    ),
    ProblemType(
        "internal_error",
        "Internal server error",
        500,
        "Something failed on the service's side; the request changed nothing.",
        "Retry later (with the same Idempotency-Key for an order creation). If it persists, "
        "report it with the response's `X-Request-ID`.",
    ),
    ProblemType(
        "error",
        "Request failed",
        None,
        "An error without a more specific code (an HTTP status this service does not "
        "otherwise describe).",
        "Act on the HTTP status code and the `detail`.",
    ),
    # ------------------------------------------------------------- the reverse proxy
    ProblemType(
        "request_timeout",
        "Request timeout",
        408,
        "The reverse proxy did not receive the whole request in time (headers within 10 s, "
        "no pause over 10 s in the body).",
        "Send the request without pauses; retry it.",
        from_proxy=True,
    ),
    ProblemType(
        "bad_gateway",
        "Bad gateway",
        502,
        "The reverse proxy could not reach the service.",
        "Retry after the seconds in `Retry-After`, with the same Idempotency-Key for an "
        "order creation.",
        from_proxy=True,
    ),
    ProblemType(
        "gateway_timeout",
        "Gateway timeout",
        504,
        "The service did not answer the reverse proxy in time; the request may or may not "
        "have been applied.",
        "Retry with the same Idempotency-Key (an order creation is then created at most "
        "once), or read the resource to see whether it changed.",
        from_proxy=True,
    ),
)

PROBLEM_TYPES: dict[str, ProblemType] = {problem_type.code: problem_type for problem_type in _TYPES}
