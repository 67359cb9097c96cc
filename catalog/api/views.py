"""Public product reads: thin views over catalog selectors."""

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.generics import ListAPIView, RetrieveAPIView

from catalog.api.serializers import ProductOutputSerializer
from catalog.selectors import product_get_active, product_list_active
from orders_project.common.pagination import CreatedCursorPagination


@extend_schema(
    tags=["products"],
    parameters=[
        OpenApiParameter("search", OpenApiTypes.STR, description="Substring of name or sku."),
        OpenApiParameter("page_size", OpenApiTypes.INT, description="1–100, default 20."),
    ],
)
class ProductListView(ListAPIView):
    serializer_class = ProductOutputSerializer
    pagination_class = CreatedCursorPagination
    authentication_classes: list = []

    def get_queryset(self):
        return product_list_active(search=self.request.query_params.get("search") or None)


@extend_schema(tags=["products"])
class ProductDetailView(RetrieveAPIView):
    serializer_class = ProductOutputSerializer
    authentication_classes: list = []

    def get_object(self):
        product = product_get_active(product_id=self.kwargs["product_id"])
        if product is None:
            raise Http404
        return product
