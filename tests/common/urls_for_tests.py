"""Test-only urlconf: the real project urls plus small probe views that provoke each error.

Use with `@pytest.mark.urls("tests.common.urls_for_tests")`. The probes exist because no
order endpoint exists yet; they exercise the same authentication, permission and exception
handling that every API view gets.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied, Throttled
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from clients.authentication import HasApiKey
from orders_project.urls import handler400, handler403, handler404, handler500  # noqa: F401
from orders_project.urls import urlpatterns as project_urlpatterns

probe_logger = logging.getLogger("tests.probe")


class ProtectedProbe(APIView):
    """Stands in for an order endpoint: X-API-Key required."""

    permission_classes = [HasApiKey]

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response({"client_id": str(request.user.id), "client_name": request.user.name})


class _ItemSerializer(serializers.Serializer):
    product_id = serializers.UUIDField()
    quantity = serializers.IntegerField(min_value=1, max_value=1000)


class _ProbeInputSerializer(serializers.Serializer):
    email = serializers.EmailField()
    items = _ItemSerializer(many=True)
    tags = serializers.ListField(child=serializers.IntegerField(), required=False)


@extend_schema(exclude=True)
class EchoProbe(APIView):
    """Parses a JSON body (400 malformed, 415 wrong type) and validates it (400 shapes)."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    def post(self, request):
        data = request.data
        if isinstance(data, dict) and data.get("validate"):
            serializer = _ProbeInputSerializer(data=data["validate"])
            serializer.is_valid(raise_exception=True)
        return Response({"received": data})


@extend_schema(exclude=True)
class ForbiddenProbe(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    def get(self, request):
        raise PermissionDenied("Probe says no.")


@extend_schema(exclude=True)
class ThrottledProbe(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    def get(self, request):
        raise Throttled(wait=3)


class _OnePerMinuteByHeader(SimpleRateThrottle):
    """A real DRF throttle counting in Redis, keyed by a header so each test has its own."""

    scope = "probe"
    rate = "1/min"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": request.headers["X-Probe"]}


@extend_schema(exclude=True)
class RateLimitedProbe(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [_OnePerMinuteByHeader]

    def get(self, request):
        return Response({"ok": True})


@extend_schema(exclude=True)
class BoomProbe(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    def get(self, request):
        raise RuntimeError("boom: SELECT secret FROM internals WHERE password='hunter2'")


def boom_plain(request):
    raise RuntimeError("boom: SELECT secret FROM internals WHERE password='hunter2'")


def forbidden_plain(request):
    raise DjangoPermissionDenied


@csrf_exempt
def body_plain(request):
    """A plain Django view reading the body: Django enforces DATA_UPLOAD_MAX_MEMORY_SIZE."""
    return HttpResponse(str(len(request.body)))


def log_inside(request):
    probe_logger.info("inside the view")
    return JsonResponse({"ok": True})


urlpatterns = [
    *project_urlpatterns,
    path("probe/protected/", ProtectedProbe.as_view()),
    path("probe/echo/", EchoProbe.as_view()),
    path("probe/forbidden/", ForbiddenProbe.as_view()),
    path("probe/forbidden-plain/", forbidden_plain),
    path("probe/throttled/", ThrottledProbe.as_view()),
    path("probe/rate-limited/", RateLimitedProbe.as_view()),
    path("probe/boom/", BoomProbe.as_view()),
    path("probe/boom-plain/", boom_plain),
    path("probe/body/", body_plain),
    path("probe/log/", log_inside),
]
