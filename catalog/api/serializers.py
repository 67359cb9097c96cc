from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from catalog.models import Product

SEARCH_MAX_LENGTH = 100


class ProductOutputSerializer(serializers.ModelSerializer):
    currency = serializers.SerializerMethodField()

    class Meta:
        model = Product
        fields = [
            "id",
            "sku",
            "name",
            "description",
            "price",
            "currency",
            "stock",
            "is_active",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields
        ref_name = "Product"
        extra_kwargs = {
            "stock": {"help_text": "Units available to order now."},
            "is_active": {"help_text": "Always true here: inactive products are not listed."},
        }

    @extend_schema_field(
        serializers.CharField(help_text="The shop's currency (ISO 4217), e.g. USD.")
    )
    def get_currency(self, product: Product) -> str:
        return settings.SHOP_CURRENCY
