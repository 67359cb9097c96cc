"""Public product reads: thin views over catalog selectors."""

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView, RetrieveAPIView

from catalog.api.serializers import ProductOutputSerializer
from catalog.selectors import product_get_active, product_list_active
from core.openapi import page_size_parameter, problem_responses
from core.pagination import CreatedCursorPagination

SEARCH_MAX_LENGTH = 100


class ProductFilterSerializer(serializers.Serializer):
    # CharField refuses NUL characters, which PostgreSQL cannot compare (a 500 otherwise).
    search = serializers.CharField(
        required=False, allow_blank=True, max_length=SEARCH_MAX_LENGTH, trim_whitespace=True
    )


@extend_schema(
    tags=["products"],
    parameters=[
        OpenApiParameter(
            "search",
            OpenApiTypes.STR,
            description=f"Case-insensitive substring of name or sku (≤ {SEARCH_MAX_LENGTH}).",
        ),
        page_size_parameter(),
    ],
    responses={200: ProductOutputSerializer(many=True), **problem_responses(400, 429)},
)
class ProductListView(ListAPIView):
    serializer_class = ProductOutputSerializer
    pagination_class = CreatedCursorPagination
    authentication_classes: list = []

    def get_queryset(self):
        filters = ProductFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return product_list_active(search=filters.validated_data.get("search") or None)


@extend_schema(
    tags=["products"],
    responses={200: ProductOutputSerializer, **problem_responses(404, 429)},
)
class ProductDetailView(RetrieveAPIView):
    serializer_class = ProductOutputSerializer
    authentication_classes: list = []

    def get_object(self):
        product = product_get_active(product_id=self.kwargs["product_id"])
        if product is None:
            raise Http404
        return product
