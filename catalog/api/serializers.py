from django.conf import settings
from rest_framework import serializers

from catalog.models import Product


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

    def get_currency(self, product: Product) -> str:
        return settings.SHOP_CURRENCY
