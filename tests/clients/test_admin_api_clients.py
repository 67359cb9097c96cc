"""API clients in the admin: the key is shown once and stored only as a hash; revoke works."""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test import Client
from django.urls import reverse
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from clients.authentication import ApiKeyAuthentication
from clients.keys import api_key_hash
from clients.models import ApiClient
from clients.selectors import api_client_get_by_key
from tests.admin_helpers import logged_in, make_staff
from tests.factories import make_api_client

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:clients_apiclient_changelist")
ADD = reverse("admin:clients_apiclient_add")
KEY_PATTERN = re.compile(r"ok_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")


def change_url(client: ApiClient) -> str:
    return reverse("admin:clients_apiclient_change", args=[client.pk])


def authenticate(key: str) -> ApiClient:
    """What the API's X-API-Key authentication makes of a key (no order endpoint exists yet)."""
    request = Request(APIRequestFactory().get("/", HTTP_X_API_KEY=key))
    client, _ = ApiKeyAuthentication().authenticate(request)
    return client


def tables_containing(text: str) -> list[str]:
    """Every table with a row whose text form (all columns) contains `text`."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(
                f'SELECT 1 FROM "{table}" AS t WHERE t::text LIKE %s LIMIT 1',  # noqa: S608
                [f"%{text}%"],
            )
            if cursor.fetchone():
                found.append(table)
    return found


@pytest.fixture
def key_manager():
    return make_staff("keys", "API client managers")


@pytest.fixture
def browser(key_manager) -> Client:
    return logged_in(key_manager)


def test_the_add_form_asks_only_for_a_name(browser):
    # when an API client manager opens the add page
    html = browser.get(ADD).content.decode()

    # then the only input is the name
    fields = set(re.findall(r'<input[^>]*name="([a-z_]+)"', html)) - {
        "csrfmiddlewaretoken",
        "_save",
        "_addanother",
        "_continue",
    }
    assert fields == {"name"}
    assert "key_hash" not in html


def test_creating_a_client_shows_the_key_once_and_stores_only_its_hash(browser):
    # when an API client manager creates a client
    response = browser.post(ADD, {"name": "partner-shop"})

    # then the response shows the key, with a warning that it is shown only once
    assert response.status_code == 200
    html = response.content.decode()
    keys = set(KEY_PATTERN.findall(html))
    assert len(keys) == 1
    key = keys.pop()
    assert "shown only this once" in html
    assert "no-store" in response.headers["Cache-Control"]

    # and the client works with that key, stored as its hash only
    client = ApiClient.objects.get(name="partner-shop")
    assert client.key_hash == api_key_hash(key)
    assert api_client_get_by_key(key=key) == client
    assert tables_containing(key) == []
    # (the check finds what it looks for: the hash is there)
    assert tables_containing(client.key_hash) == ["orders_apiclient"]

    # and the key travelled in no cookie (messages storage) and is not shown again
    assert all(key not in morsel.value for morsel in response.cookies.values())
    for url in (CHANGELIST, change_url(client)):
        page = browser.get(url).content.decode()
        assert key not in page
        assert client.key_hash not in page
        assert client.key_prefix in page
    # and the admin log records the creation
    assert LogEntry.objects.filter(object_id=str(client.pk), action_flag=1).exists()


def test_a_duplicate_name_is_a_form_error(browser):
    # given a client named "dup"
    make_api_client("dup")

    # when another is created with that name
    response = browser.post(ADD, {"name": "dup"})

    # then the form says so and no key is issued
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["name"]
    assert not KEY_PATTERN.search(response.content.decode())
    assert ApiClient.objects.filter(name="dup").count() == 1


def test_the_revoke_action_makes_the_key_useless(browser, key_manager):
    # given two clients whose keys work
    (revoked, revoked_key), (kept, kept_key) = make_api_client("a"), make_api_client("b")
    assert authenticate(revoked_key) == revoked

    # when a manager revokes one from the list
    response = browser.post(
        CHANGELIST, {"action": "revoke_selected", "_selected_action": [revoked.pk]}, follow=True
    )

    # then its key is refused, the other one still works
    assert "Revoked 1 API client key(s)." in response.content.decode()
    assert api_client_get_by_key(key=revoked_key) is None
    assert api_client_get_by_key(key=kept_key) == kept
    with pytest.raises(AuthenticationFailed) as refused:
        authenticate(revoked_key)
    assert refused.value.status_code == 401
    assert authenticate(kept_key) == kept

    # and the list shows it revoked, with when
    revoked.refresh_from_db()
    assert revoked.is_active is False and revoked.revoked_at is not None
    listing = browser.get(CHANGELIST, {"is_active__exact": "0"})
    assert [c.name for c in listing.context["cl"].result_list] == ["a"]
    row = re.search(r"<tr>.*?>a</a>.*?</tr>", listing.content.decode(), re.S).group(0)
    assert 'alt="False"' in row
    # and the admin log says who revoked it
    assert LogEntry.objects.filter(object_id=str(revoked.pk), user=key_manager).exists()


def test_the_revoke_button_on_the_change_page(browser):
    # given a client with a working key
    client, key = make_api_client("partner")
    page = browser.get(change_url(client)).content.decode()
    assert 'name="_revoke"' in page

    # when the manager presses "Revoke key" on its page
    response = browser.post(change_url(client), {"name": "partner", "_revoke": "Revoke key"})

    # then the key is refused from now on and the page no longer offers the button
    assert response.status_code == 302
    assert api_client_get_by_key(key=key) is None
    client.refresh_from_db()
    assert client.revoked_at is not None
    page = browser.get(change_url(client)).content.decode()
    assert 'name="_revoke"' not in page
    assert "was revoked" in page


def test_renaming_does_not_touch_the_key(browser):
    # given a client
    client, key = make_api_client("old-name")

    # when it is renamed in the admin
    response = browser.post(change_url(client), {"name": "new-name", "_save": "Save"})

    # then the key still works, for the renamed client
    assert response.status_code == 302
    assert api_client_get_by_key(key=key).name == "new-name"


def test_only_api_client_managers_and_superusers_manage_clients():
    # given a client, a catalog manager, a read-only staff member and a superuser
    client, key = make_api_client("partner")
    catalog = logged_in(make_staff("cat", "Catalog managers"))
    reader = logged_in(make_staff("reader", "Read-only staff"))
    root = logged_in(make_staff("root", superuser=True))

    # then the others cannot list, add or revoke
    for other in (catalog, reader):
        assert other.get(CHANGELIST).status_code == 403
        assert other.post(ADD, {"name": "sneaky"}).status_code == 403
        response = other.post(change_url(client), {"name": "partner", "_revoke": "Revoke key"})
        assert response.status_code == 403
    assert not ApiClient.objects.filter(name="sneaky").exists()
    assert api_client_get_by_key(key=key) == client

    # and a superuser can, but nobody can delete a client (orders belong to it)
    assert root.get(CHANGELIST).status_code == 200
    assert root.get(ADD).status_code == 200
    assert root.get(reverse("admin:clients_apiclient_delete", args=[client.pk])).status_code == 403
