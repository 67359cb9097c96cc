"""Staff admin for API clients: creating one shows its key once; revoke stops it at once.

Revoking goes through the service, a rename through the model's save: either way every web
process's key cache lets the old row go after the commit (clients/key_cache.py)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers

from clients.models import ApiClient
from clients.services import api_client_create, api_client_revoke

REVOKE_BUTTON = "_revoke"
# Set on the instance being saved and read back while rendering the same response.
ISSUED_KEY_ATTR = "_issued_key"
REVOKED_ATTR = "_revoked"


@admin.register(ApiClient)
class ApiClientAdmin(admin.ModelAdmin):
    list_display = ("name", "key_prefix", "is_active", "created_at", "revoked_at")
    list_filter = ("is_active",)
    search_fields = ("name", "key_prefix")
    ordering = ("name",)
    actions = ("revoke_selected",)
    # key_hash is never shown: it is not in any of these lists, nor in the form.
    change_form_template = "admin/clients/apiclient/change_form.html"

    def get_fields(self, request: HttpRequest, obj: ApiClient | None = None):
        if obj is None:
            return ["name"]
        return ["name", "key_prefix", "is_active", "created_at", "updated_at", "revoked_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiClient | None = None):
        if obj is None:
            return []
        return ["key_prefix", "is_active", "created_at", "updated_at", "revoked_at"]

    def has_delete_permission(self, request: HttpRequest, obj: ApiClient | None = None) -> bool:
        # Orders belong to a client: revoke its key instead of deleting it.
        return False

    def save_model(self, request: HttpRequest, obj: ApiClient, form, change: bool) -> None:
        if not change:
            client, key = api_client_create(name=form.cleaned_data["name"])
            for field in ApiClient._meta.concrete_fields:
                setattr(obj, field.attname, getattr(client, field.attname))
            obj._state.adding = False
            # Held in memory for this response only (response_add); never stored.
            setattr(obj, ISSUED_KEY_ATTR, key)
            return
        super().save_model(request, obj, form, change)  # renaming
        if REVOKE_BUTTON in request.POST:
            setattr(obj, REVOKED_ATTR, bool(api_client_revoke(client_id=obj.pk)))
            obj.refresh_from_db()

    def construct_change_message(self, request, form, formsets, add=False):
        message = super().construct_change_message(request, form, formsets, add)
        if getattr(form.instance, REVOKED_ATTR, False):
            message = [*message, {"changed": {"fields": ["revoked (key no longer accepted)"]}}]
        return message

    def response_add(self, request: HttpRequest, obj: ApiClient, post_url_continue=None):
        key = getattr(obj, ISSUED_KEY_ATTR, None)
        if key is None:
            return super().response_add(request, obj, post_url_continue)
        # The key is rendered into this response and nowhere else: not into a message
        # (cookie/session storage), not into the database, not into a URL.
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "opts": self.opts,
            "client": obj,
            "key": key,
            "change_url": reverse("admin:clients_apiclient_change", args=[obj.pk]),
            "changelist_url": reverse("admin:clients_apiclient_changelist"),
        }
        response = TemplateResponse(request, "admin/clients/apiclient/key_created.html", context)
        add_never_cache_headers(response)
        return response

    def response_change(self, request: HttpRequest, obj: ApiClient) -> HttpResponse:
        if REVOKE_BUTTON in request.POST:
            if getattr(obj, REVOKED_ATTR, False):
                self.message_user(
                    request,
                    f"Revoked the key of “{obj}”; it is refused from now on.",
                    messages.SUCCESS,
                )
            else:
                self.message_user(request, f"“{obj}” was already revoked.", messages.INFO)
            return self.response_post_save_change(request, obj)
        return super().response_change(request, obj)

    @admin.action(description="Revoke the keys of selected API clients", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiClient]) -> None:
        revoked = 0
        for client in queryset.filter(is_active=True):
            if api_client_revoke(client_id=client.pk):
                revoked += 1
                self.log_change(request, client, "Revoked the key.")
        self.message_user(
            request,
            f"Revoked {revoked} API client key(s).",
            messages.SUCCESS if revoked else messages.INFO,
        )
