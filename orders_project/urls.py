from typing import cast

from django.contrib import admin
from django.urls import include, path, reverse_lazy
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from core.health import healthz, readyz
from core.metrics import metrics_view
from core.problem_pages import problem_type_index, problem_type_page
from orders_project.operations.views import operations_dashboard

# The admin names the service, and its "View site" link opens the API docs: the service has
# no public site of its own, and the docs are what a member of staff looks up next.
admin.site.site_header = "Orders service administration"
admin.site.site_title = "Orders service admin"
admin.site.index_title = "Orders, catalog, payments and events"
# Lazy: the URLconf is still loading here; the template renders it as the string it is.
admin.site.site_url = cast(str, reverse_lazy("swagger-ui"))

urlpatterns = [
    # Before admin.site.urls, whose catch-all would claim the path; admin_view requires a
    # staff login, the view itself the page permission.
    path(
        "admin/operations/",
        admin.site.admin_view(operations_dashboard),
        name="admin-operations",
    ),
    path("admin/", admin.site.urls),
    path("api/v1/", include("catalog.api.urls")),
    path("api/v1/", include("orders.api.urls")),
    path("api/v1/", include("payments.api.urls")),
    # The event stream's contract: the AsyncAPI document and the events' JSON Schemas.
    path("api/events/", include("outbox.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path(
        "api/redoc/",
        # Our template drops drf-spectacular's Google Fonts links: docs work offline.
        SpectacularRedocView.as_view(url_name="schema", template_name="core/redoc.html"),
        name="redoc",
    ),
    # What every problem+json `type` (a relative URI) resolves to; no trailing slash, as the
    # type is written (core/problem_types.py).
    path("problems/", problem_type_index, name="problem-types"),
    path("problems/<slug:code>", problem_type_page, name="problem-type"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]

handler400 = "core.problems.handler400"
handler403 = "core.problems.handler403"
handler404 = "core.problems.handler404"
handler500 = "core.problems.handler500"
