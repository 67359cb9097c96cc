"""The event contract's routes, mounted at /api/events/."""

from django.urls import path

from outbox.api.views import event_contract, event_contract_yaml, event_schema_file

urlpatterns = [
    path("", event_contract, name="event-contract"),
    path("asyncapi.yaml", event_contract_yaml, name="event-contract-yaml"),
    path("schemas/<str:file_name>", event_schema_file, name="event-schema"),
]
