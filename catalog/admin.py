"""Staff admin for products: a thin layer over catalog.services.

Stock is never written from a form value. The change form carries the stock shown when
it was opened (`stock_seen`, hidden); saving applies `entered - seen` to the current stock
through `product_update_by_staff`, so units sold while the form was open are not lost.
Every write goes through a service and leaves a simple_history row (who, when, what, why)
plus the admin's own LogEntry.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from simple_history.admin import SimpleHistoryAdmin

from catalog.errors import StockAdjustmentInvalid
from catalog.models import Product
from catalog.services import (
    STAFF_EDITABLE_FIELDS,
    product_check_stock_adjustment,
    product_create,
    product_set_active,
    product_update_by_staff,
)
from core.admin_paginator import EstimatedCountPaginator, SearchResolvedToIds

STOCK_HELP_TEXT = (
    "Units available to sell. Your change is applied as an adjustment, not an overwrite: "
    "saving adds (the number you enter − the number shown when you opened this page) to the "
    "stock as it is at that moment. If orders sold units meanwhile, they stay sold: e.g. you "
    "opened the page at 10, entered 15, and 3 were sold in between → stock becomes 12. "
    "A reduction that would take stock below zero is refused."
)


class ProductAdminForm(forms.ModelForm):
    stock = forms.IntegerField(min_value=0, help_text=STOCK_HELP_TEXT)
    stock_seen = forms.IntegerField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = Product
        fields = ("sku", "name", "description", "price", "stock", "is_active")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_change:
            return
        if not self.is_bound:
            self.fields["stock_seen"].initial = self.instance.stock
        else:
            # "Changed" means changed relative to what the person saw, not relative to
            # the row as it is now: stock sold meanwhile is no edit of theirs.
            seen = self.data.get(self.add_prefix("stock_seen"))
            if seen not in (None, ""):
                self.initial["stock"] = seen
        for name in STAFF_EDITABLE_FIELDS:
            if name in self.fields:
                # The value shown at opening travels with the form, so a field someone
                # else changed meanwhile is only overwritten if this person edited it.
                self.fields[name].show_hidden_initial = True

    @property
    def is_change(self) -> bool:
        return self.instance.pk is not None and not self.instance._state.adding

    def clean(self) -> dict[str, Any]:
        # BaseModelForm.clean returns cleaned_data; django-stubs types it as returning None.
        cleaned: dict[str, Any] = super().clean()  # type: ignore[assignment]
        if not self.is_change or "stock" not in self.fields:
            return cleaned
        seen, entered = cleaned.get("stock_seen"), cleaned.get("stock")
        if seen is None:
            self.add_error(
                None, "This form is missing the stock it was opened with; reload the page."
            )
            return cleaned
        if entered is not None and entered < seen:
            # Locks the row until the admin's transaction ends (it wraps validation and
            # save_model), so the save applies the adjustment to the stock checked here.
            try:
                product_check_stock_adjustment(
                    product_id=self.instance.pk, stock_seen=seen, stock_entered=entered
                )
            except StockAdjustmentInvalid as exc:
                self.add_error("stock", exc.detail)
            except Product.DoesNotExist:
                self.add_error(None, "This product no longer exists.")
        return cleaned


def _staff_user(request: HttpRequest) -> AbstractBaseUser:
    # The admin site lets only authenticated staff in; request.user is never anonymous here.
    return cast(AbstractBaseUser, request.user)


@admin.register(Product)
class ProductAdmin(SearchResolvedToIds, SimpleHistoryAdmin):
    form = ProductAdminForm
    list_display = ("sku", "name", "price", "stock", "is_active", "updated_at")
    list_display_links = ("sku", "name")
    list_filter = ("is_active",)
    search_fields = ("name", "sku")
    # By SKU, the first column: its unique index serves the page (a catalog of 100,000
    # products sorted by name would be sorted in full on every page; the column header
    # still sorts by name on request).
    ordering = ("sku",)
    list_per_page = 50
    # No full COUNT(*) of a large catalog: an estimated or capped count instead.
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    readonly_fields = ("id", "created_at", "updated_at")
    actions = ("activate_selected", "deactivate_selected")

    def get_fieldsets(self, request: HttpRequest, obj: Product | None = None):
        main = ["sku", "name", "description", "price", "stock", "is_active"]
        if obj is not None and self.has_change_permission(request, obj):
            main.append("stock_seen")
        fieldsets: list[tuple[str | None, dict[str, Any]]] = [(None, {"fields": main})]
        if obj is not None:
            fieldsets.append(("Record", {"fields": ["id", "created_at", "updated_at"]}))
        return fieldsets

    def has_delete_permission(self, request: HttpRequest, obj: Product | None = None) -> bool:
        # Orders reference products; staff deactivate a product instead of deleting it.
        return False

    def save_model(self, request: HttpRequest, obj: Product, form: ProductAdminForm, change: bool):
        if not change:
            created = product_create(
                changed_by=_staff_user(request),
                **{name: form.cleaned_data[name] for name in form.Meta.fields},
            )
            _copy_fields(source=created, target=obj)
            return
        entered = form.cleaned_data["stock"]
        seen = form.cleaned_data["stock_seen"]
        fields = {
            name: form.cleaned_data[name]
            for name in form.changed_data
            if name in STAFF_EDITABLE_FIELDS
        }
        updated = product_update_by_staff(
            product_id=obj.pk,
            fields=fields,
            stock_seen=seen,
            stock_entered=entered,
            changed_by=_staff_user(request),
        )
        _copy_fields(source=updated, target=obj)
        if updated.stock != entered:
            adjustment = entered - seen
            what = f"adjusted by {adjustment:+d}" if adjustment else "not changed by you"
            self.message_user(
                request,
                f"Stock changed from {seen} to {seen + (updated.stock - entered)} by orders "
                f"while the form was open; your stock was {what}, so it is now "
                f"{updated.stock}.",
                messages.WARNING,
            )

    # Reverting from the history page would save an old form through this admin; stock
    # must not be set back to an old value, and simple_history lets anyone who can view
    # the history post that form. History is for reading.
    def revert_disabled(self, request: HttpRequest, obj: Product | None = None) -> bool:
        return True

    # simple_history looks the ids of its URLs up unchecked (Django's own get_object checks
    # them): "/<not a uuid>/history/" raised ValidationError, a 500. Not a product: 404.
    def history_view(self, request: HttpRequest, object_id, extra_context=None):
        _require_history_ids(object_id)
        return super().history_view(request, object_id, extra_context)

    def history_form_view(self, request: HttpRequest, object_id, version_id, extra_context=None):
        if request.method != "GET":
            raise PermissionDenied
        _require_history_ids(object_id, version_id)
        return super().history_form_view(request, object_id, version_id, extra_context)

    @admin.action(description="Activate selected products", permissions=["change"])
    def activate_selected(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        self._set_active(request, queryset, is_active=True)

    @admin.action(description="Deactivate selected products", permissions=["change"])
    def deactivate_selected(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        self._set_active(request, queryset, is_active=False)

    def _set_active(self, request: HttpRequest, queryset: QuerySet[Product], *, is_active: bool):
        # For the admin log only; the history rows written by the service are the audit.
        to_change = list(queryset.exclude(is_active=is_active))
        changed = product_set_active(
            product_ids=[product.pk for product in queryset.only("pk")],
            is_active=is_active,
            changed_by=_staff_user(request),
        )
        verb = "Activated" if is_active else "Deactivated"
        for product in to_change:
            self.log_change(request, product, verb)
        self.message_user(
            request, f"{verb} {changed} product(s).", messages.SUCCESS if changed else messages.INFO
        )


def _require_history_ids(object_id: str, version_id: str | None = None) -> None:
    """Http404 unless the URL's ids can name a product and one of its history rows."""
    try:
        Product._meta.pk.to_python(unquote(object_id))
        if version_id is not None:
            Product.history.model._meta.pk.to_python(version_id)
    except ValidationError as exc:
        raise Http404("No such product or version.") from exc


def _copy_fields(*, source: Product, target: Product) -> None:
    """Make the admin's in-memory object match the row the service wrote."""
    for field in Product._meta.concrete_fields:
        setattr(target, field.attname, getattr(source, field.attname))
    target._state.adding = False
    target._state.db = source._state.db
