"""API keys (SPEC §3 Authentication): printed once, stored only as SHA-256, X-API-Key checked.

There is no order endpoint yet, so a probe view protected by HasApiKey stands in for one.
"""

from __future__ import annotations

import hashlib
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from clients.models import ApiClient
from clients.services import api_client_revoke, api_client_rotate_key
from tests.common.helpers import assert_problem
from tests.factories import make_api_client

pytestmark = pytest.mark.django_db

PROTECTED = "/probe/protected/"


def _create_with_command(name: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("create_api_client", name, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_create_api_client_prints_the_key_once_and_stores_only_its_hash():
    # when staff run the command
    out, err = _create_with_command("storefront")
    # then stdout is exactly the key (scriptable), printed once, and not on stderr
    key = out.strip()
    assert out == key + "\n"
    assert key.startswith("ok_") and len(key) > 40
    assert (out + err).count(key) == 1
    assert "storefront" in err
    # and the row holds SHA-256(key), never the key or its secret part
    client = ApiClient.objects.get(name="storefront")
    assert client.key_hash == hashlib.sha256(key.encode()).hexdigest()
    # ok_<hex prefix>_<secret>: the secret (URL-safe base64) may itself contain "_"
    secret = key.split("_", 2)[2]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM orders_apiclient WHERE id = %s", [client.pk])
        row = cursor.fetchone()
    for value in row:
        assert key not in str(value)
        assert secret not in str(value)


def test_two_clients_get_different_keys():
    key_a = _create_with_command("a")[0].strip()
    key_b = _create_with_command("b")[0].strip()
    assert key_a != key_b


def test_create_api_client_refuses_a_duplicate_name():
    _create_with_command("dup")
    with pytest.raises(CommandError, match="already exists"):
        _create_with_command("dup")
    assert ApiClient.objects.filter(name="dup").count() == 1


@pytest.mark.urls("tests.common.urls_for_tests")
def test_a_valid_key_authenticates_as_its_client(api):
    # given a client created with the command
    key = _create_with_command("partner")[0].strip()
    # when it calls a protected endpoint with its key
    api.credentials(HTTP_X_API_KEY=key)
    response = api.get(PROTECTED)
    # then it is that client
    assert response.status_code == 200
    assert response.json()["client_name"] == "partner"


@pytest.mark.urls("tests.common.urls_for_tests")
@pytest.mark.parametrize(
    "mangle",
    [
        lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),  # one character off
        lambda key: key.upper(),
        lambda key: key + "x",
        lambda key: key[:20],
        lambda key: hashlib.sha256(key.encode()).hexdigest(),  # the stored hash is no key
    ],
)
def test_a_wrong_key_is_401_authentication_failed(api, mangle):
    _, key = make_api_client()
    api.credentials(HTTP_X_API_KEY=mangle(key))
    response = api.get(PROTECTED)
    assert_problem(response, status=401, code="authentication_failed")
    assert response["WWW-Authenticate"] == 'ApiKey header="X-API-Key"'


@pytest.mark.urls("tests.common.urls_for_tests")
def test_a_revoked_key_is_401_at_once(api):
    # given a client whose key works
    client, key = make_api_client()
    api.credentials(HTTP_X_API_KEY=key)
    assert api.get(PROTECTED).status_code == 200
    # when staff revoke it
    assert api_client_revoke(client_id=client.pk) == 1
    # then the next request is refused
    assert_problem(api.get(PROTECTED), status=401, code="authentication_failed")


@pytest.mark.urls("tests.common.urls_for_tests")
def test_a_rotated_key_replaces_the_old_one(api):
    client, old_key = make_api_client()
    new_key = api_client_rotate_key(client_id=client.pk)
    api.credentials(HTTP_X_API_KEY=old_key)
    assert_problem(api.get(PROTECTED), status=401, code="authentication_failed")
    api.credentials(HTTP_X_API_KEY=new_key)
    assert api.get(PROTECTED).status_code == 200


@pytest.mark.urls("tests.common.urls_for_tests")
@pytest.mark.parametrize("headers", [{}, {"HTTP_X_API_KEY": ""}])
def test_a_missing_key_is_401_not_authenticated_with_a_challenge(api, headers):
    response = api.get(PROTECTED, **headers)
    assert_problem(response, status=401, code="not_authenticated")
    assert response["WWW-Authenticate"] == 'ApiKey header="X-API-Key"'


@pytest.mark.urls("tests.common.urls_for_tests")
def test_a_key_in_another_header_does_not_count(api):
    _, key = make_api_client()
    response = api.get(PROTECTED, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert_problem(response, status=401, code="not_authenticated")


def test_create_api_client_refuses_a_blank_name():
    with pytest.raises(CommandError, match="needs a name"):
        _create_with_command("   ")
    assert not ApiClient.objects.exists()
