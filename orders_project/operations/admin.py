"""The login audit (django-axes) in the admin: read-only, for superusers.

AccessFailureLog (every failed login, with whether it locked) and AccessLog (successful
logins and logouts) are the audit: nobody may change or delete a row in the admin, not even a
superuser. AccessAttempt is the throttle's live state: a superuser may delete a row, which
lifts that lock early (as `manage.py axes_reset_username` does). No staff group is granted
these models (see ensure_staff_groups): the rows name staff accounts and their addresses.
AXES_ENABLE_ADMIN is off so that these registrations replace the library's editable ones.
"""

from __future__ import annotations

from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.http import HttpRequest


class _ReadOnly:
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(AccessFailureLog)
class LoginFailureAuditAdmin(_ReadOnly, AccessFailureLogAdmin):
    pass


@admin.register(AccessLog)
class LoginAuditAdmin(_ReadOnly, AccessLogAdmin):
    pass


@admin.register(AccessAttempt)
class LoginThrottleStateAdmin(_ReadOnly, AccessAttemptAdmin):
    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # Deleting a row is how a superuser lifts a lock early; staff never may.
        return bool(request.user.is_active and request.user.is_superuser)
