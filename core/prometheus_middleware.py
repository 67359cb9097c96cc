"""django-prometheus' request middleware with label values a client cannot choose.

Every series in /metrics is one label set, kept for the life of the process (and, under
PROMETHEUS_MULTIPROC_DIR, in files that outlive it). django-prometheus 2.5 labels its
latency histogram with the raw `request.method`, so 1,000 made-up methods made 1,000
histograms (~15 series each): /metrics grew from 116 KB to 2.2 MB. Methods outside RFC 9110's
registry (and PATCH) are counted under one `other` label instead.

Why map rather than refuse unknown methods before the metrics middleware: a flood of odd
methods stays visible in the very counters an operator watches (`method="other"`), and the
views already answer them with 405 problem+json. Refusing up front would hide the attack
and still leave the label space open to the next label nobody audited.

The other labels were audited and are chosen by the server, not the client: `view` is a
URL pattern's name (unknown URLs have none: "<unnamed view>"), `status` a status code our
code returns, `transport` http/https, `templatename` and `charset` what our views render,
exception `type` a class in our code. tests/security/test_metric_labels.py sends random
methods, paths, headers and query strings and checks that no new label set appears.
"""

from __future__ import annotations

# django-prometheus ships no type information.
from django_prometheus.middleware import PrometheusAfterMiddleware  # type: ignore[import-untyped]
from django_prometheus.utils import Time  # type: ignore[import-untyped]

KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
)
OTHER_METHOD = "other"


def method_label(method: str | None) -> str:
    # Methods are case-sensitive (RFC 9110 §9.1): "get" is not GET, so it is "other" too.
    return method if method in KNOWN_METHODS else OTHER_METHOD


def _declared_length(request) -> int:
    try:
        return max(0, int(request.headers.get("content-length") or 0))
    except ValueError:
        return 0


class BoundedLabelsAfterMiddleware(PrometheusAfterMiddleware):
    """PrometheusAfterMiddleware whose `method` label has ten possible values."""

    def _method(self, request):
        return method_label(request.method)

    def process_request(self, request):
        # Upstream's, except for the body size: it does int(Content-Length) unguarded, so a
        # header like "Content-Length: abc" (gunicorn refuses it; other servers may not)
        # was a 500 raised from the metrics middleware itself.
        self.label_metric(
            self.metrics.requests_by_method, request, method=self._method(request)
        ).inc()
        self.label_metric(
            self.metrics.requests_by_transport, request, transport=self._transport(request)
        ).inc()
        if request.headers.get("x-requested-with") == "XMLHttpRequest":
            self.label_metric(self.metrics.requests_ajax, request).inc()
        self.label_metric(self.metrics.requests_body_bytes, request).observe(
            _declared_length(request)
        )
        request.prometheus_after_middleware_event = Time()

    def label_metric(self, metric, request, response=None, **labels):
        # Every labelled metric goes through here, including the latency histogram that
        # upstream labels with the raw request.method: normalise it in this one place.
        if "method" in labels:
            labels["method"] = method_label(labels["method"])
        return super().label_metric(metric, request, response, **labels)
