"""A table-less model whose only job is to carry the page's permission.

Django creates permissions for models, so an unmanaged model with no default permissions
gives `operations.view_dashboard` a content type of its own (no stale content type, no
change to a domain app's models or migrations) and no table is ever created for it.
"""

from django.db import models

VIEW_DASHBOARD = "operations.view_dashboard"


class OperationsDashboard(models.Model):
    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("view_dashboard", "Can view the operations dashboard")]
        verbose_name = "operations dashboard"

    def __str__(self) -> str:
        return "Operations dashboard"
