"""The product API's routes: a read-only viewset on a router, without an API root view."""

from rest_framework.routers import SimpleRouter

from catalog.api.views import ProductViewSet

router = SimpleRouter(use_regex_path=False)
router.register("products", ProductViewSet, basename="product")

urlpatterns = router.urls
