"""Moving API clients from the orders app to the clients app (orders 0005 / clients 0001)
loses nothing: a database migrated before the move keeps every client and key, the content
type, the permissions granted to staff groups and the admin's log entries, all resolving to
clients.ApiClient afterwards; and the move can be migrated back and forth."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from clients.keys import api_key_generate, api_key_hash
from clients.models import ApiClient
from clients.selectors import api_client_get_by_key

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_THE_MOVE = [("orders", "0004_order_status_refunded"), ("clients", None)]
CODENAMES = {"add_apiclient", "change_apiclient", "delete_apiclient", "view_apiclient"}


def migrate_to(targets: list[tuple[str, str | None]]) -> None:
    MigrationExecutor(connection).migrate(targets)
    # The content type cache would otherwise answer with the label from before the step.
    ContentType.objects.clear_cache()


def latest() -> list[tuple[str, str]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


@dataclass(frozen=True)
class BeforeTheMove:
    """What staff had made of API clients while they were the orders app's."""

    client_id: UUID
    key: str
    key_hash: str
    content_type_id: int
    permission_ids: frozenset[int]
    group_id: int
    staff_id: int
    log_entry_id: int


def given_api_clients_of_the_orders_app() -> BeforeTheMove:
    """A client (as the orders app's model at 0004), a group granted its permissions and a
    staff member in it, and the admin's log entry of the client's creation."""
    old_apps = MigrationExecutor(connection).loader.project_state([BEFORE_THE_MOVE[0]]).apps
    key, prefix = api_key_generate()
    client = old_apps.get_model("orders", "ApiClient").objects.create(
        name="storefront (before the move)", key_prefix=prefix, key_hash=api_key_hash(key)
    )
    content_type, _ = ContentType.objects.get_or_create(app_label="orders", model="apiclient")
    permissions = [
        Permission.objects.get_or_create(
            content_type=content_type,
            codename=codename,
            defaults={"name": f"Can {codename.split('_')[0]} API client"},
        )[0]
        for codename in sorted(CODENAMES)
    ]
    group = Group.objects.create(name="API client managers (before the move)")
    group.permissions.set(permissions)
    staff = get_user_model().objects.create_user(username="keeper", password="x", is_staff=True)
    staff.groups.add(group)
    entry = LogEntry.objects.create(
        user=staff,
        content_type=content_type,
        object_id=str(client.pk),
        object_repr=client.name,
        action_flag=ADDITION,
        change_message="Created before the move.",
    )
    return BeforeTheMove(
        client_id=client.pk,
        key=key,
        key_hash=client.key_hash,
        content_type_id=content_type.pk,
        permission_ids=frozenset(p.pk for p in permissions),
        group_id=group.pk,
        staff_id=staff.pk,
        log_entry_id=entry.pk,
    )


def assert_all_kept_as_clients_app(before: BeforeTheMove) -> None:
    # the client row, its key hash, and its key still authenticating
    client = ApiClient.objects.get(pk=before.client_id)
    assert client.key_hash == before.key_hash
    assert api_client_get_by_key(key=before.key) == client
    # the same content type, labelled `clients`, the only one of the model
    content_type = ContentType.objects.get(pk=before.content_type_id)
    assert (content_type.app_label, content_type.model) == ("clients", "apiclient")
    assert content_type.model_class() is ApiClient
    assert ContentType.objects.get_for_model(ApiClient).pk == before.content_type_id
    assert not ContentType.objects.filter(app_label="orders", model="apiclient").exists()
    # the group's grants: the same permission rows, now clients.*_apiclient
    granted = Group.objects.get(pk=before.group_id).permissions.all()
    assert {p.pk for p in granted} == before.permission_ids
    assert {p.codename for p in granted} == CODENAMES
    assert {p.content_type_id for p in granted} == {before.content_type_id}
    staff = get_user_model().objects.get(pk=before.staff_id)
    assert all(staff.has_perm(f"clients.{codename}") for codename in CODENAMES)
    # the admin's log entry, resolving to the client in the clients app's admin
    entry = LogEntry.objects.get(pk=before.log_entry_id)
    assert entry.get_edited_object() == client
    assert entry.get_admin_url() == reverse("admin:clients_apiclient_change", args=[client.pk])


def test_moving_api_clients_to_their_app_keeps_keys_grants_and_history():
    try:
        # given a database as it was before the move, with a client, grants and history
        migrate_to(BEFORE_THE_MOVE)
        before = given_api_clients_of_the_orders_app()

        # when it is migrated to the latest state
        migrate_to(latest())

        # then every row is still there and belongs to clients.ApiClient
        assert_all_kept_as_clients_app(before)

        # when the move is migrated back
        migrate_to(BEFORE_THE_MOVE)

        # then the content type is the orders app's again, with the rows it labels
        content_type = ContentType.objects.get(pk=before.content_type_id)
        assert (content_type.app_label, content_type.model) == ("orders", "apiclient")
        assert Permission.objects.filter(content_type=content_type).count() == len(CODENAMES)
        assert LogEntry.objects.filter(content_type=content_type).count() == 1

        # when it is migrated forward once more
        migrate_to(latest())

        # then nothing was lost on the way back and forth
        assert_all_kept_as_clients_app(before)
    finally:
        # other tests of this worker share the database: leave it at the latest state
        migrate_to(latest())
