from django.urls import path

from payments.api.views import PaymentWebhookView

urlpatterns = [
    path("payments/webhook/", PaymentWebhookView.as_view(), name="payment-webhook"),
]
