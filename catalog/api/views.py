"""Public product reads: a read-only viewset over catalog selectors."""

from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, viewsets

from catalog.api import openapi
from catalog.api.serializers import SEARCH_MAX_LENGTH, ProductOutputSerializer
from catalog.selectors import product_get_active, product_list_active
from core.pagination import CreatedCursorPagination


class ProductFilterSerializer(serializers.Serializer):
    # CharField refuses NUL characters, which PostgreSQL cannot compare (a 500 otherwise).
    search = serializers.CharField(
        required=False, allow_blank=True, max_length=SEARCH_MAX_LENGTH, trim_whitespace=True
    )


# No docstring on the viewset: drf-spectacular would publish it as the operations' description.
@extend_schema(tags=["products"])
@extend_schema_view(list=openapi.PRODUCTS_LIST, retrieve=openapi.PRODUCTS_RETRIEVE)
class ProductViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = ProductOutputSerializer
    pagination_class = CreatedCursorPagination
    authentication_classes: list = []
    lookup_url_kwarg = "product_id"
    lookup_value_converter = "uuid"

    def get_view_name(self) -> str:
        # OPTIONS reports it: the names of the two generic views this viewset replaced.
        return "Product Detail" if self.detail else "Product List"

    def get_queryset(self):
        filters = ProductFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return product_list_active(search=filters.validated_data.get("search") or None)

    def get_object(self):
        product = product_get_active(product_id=self.kwargs["product_id"])
        if product is None:
            raise Http404
        return product
