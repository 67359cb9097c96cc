"""`python manage.py ensure_staff_groups`: create or update the staff groups (idempotent).

Non-superuser staff get exactly what their group grants in the admin.
"""

from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand

# group name -> permission codenames ("app_label.codename")
STAFF_GROUPS: dict[str, list[str]] = {
    "Catalog managers": [
        "catalog.view_product",
        "catalog.add_product",
        "catalog.change_product",
        "catalog.view_historicalproduct",
    ],
    "Read-only staff": [
        "catalog.view_product",
        "catalog.view_historicalproduct",
    ],
    "API client managers": [
        "clients.view_apiclient",
        "clients.add_apiclient",
        "clients.change_apiclient",
    ],
    # The operations page, and the outbox list its lag and dead-letter figures link to.
    # Not the login audit (axes' AccessAttempt/AccessFailureLog/AccessLog): it names staff
    # accounts, their addresses and which accounts are under attack; it is security data,
    # read by superusers only, and no group here grants it.
    "Operations": [
        "operations.view_dashboard",
        "outbox.view_outboxevent",
    ],
}


class Command(BaseCommand):
    help = "Create or update the staff groups and their permissions."

    def handle(self, *args, **options):
        for group_name, codenames in STAFF_GROUPS.items():
            group, _ = Group.objects.get_or_create(name=group_name)
            permissions = []
            for dotted in codenames:
                app_label, codename = dotted.split(".")
                permissions.append(
                    Permission.objects.get(content_type__app_label=app_label, codename=codename)
                )
            group.permissions.set(permissions)
            if options["verbosity"] > 0:
                self.stdout.write(f"{group_name}: {len(permissions)} permissions")
