"""The orders API's routes: one viewset on a router, without an API root view (SPEC §3
lists the endpoints; a root listing them is not one of them)."""

from rest_framework.routers import SimpleRouter

from orders.api.views import OrderViewSet

router = SimpleRouter(use_regex_path=False)
router.register("orders", OrderViewSet, basename="order")

urlpatterns = router.urls
