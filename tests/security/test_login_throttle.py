"""Staff logins are throttled per address and per username, and audited (issue 9 item 9).

django-axes stands before the password check: once an address, or a username from any
addresses, has LOGIN_FAILURE_LIMIT failures in the cool-off window, the admin login answers
429 without running the password hasher (about a second of CPU per call in production).
The hasher calls are counted with a subclass of the default hasher, installed through
PASSWORD_HASHERS: our test double of a library function, not of our code.
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from datetime import timedelta

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.http import HttpRequest
from django.test import Client, override_settings
from django.urls import reverse

from tests.admin_helpers import logged_in, make_staff
from tests.polling import eventually

pytestmark = pytest.mark.django_db

LOGIN_URL = reverse("admin:login")
PASSWORD = "correct horse battery staple"
LIMIT = 5


class CountingHasher(PBKDF2PasswordHasher):
    """The default hasher, counting how often a password is hashed. Fewer iterations keep the
    test fast: what is under test is whether the hasher runs, not what it costs."""

    iterations = 1000
    calls = 0
    _lock = threading.Lock()

    def _count(self) -> None:
        with self._lock:
            type(self).calls += 1

    def encode(self, password, salt, iterations=None):
        self._count()
        return super().encode(password, salt, iterations)


THROTTLE = override_settings(
    PASSWORD_HASHERS=[f"{__name__}.CountingHasher"],
    AXES_FAILURE_LIMIT=LIMIT,
    AXES_COOLOFF_TIME=timedelta(minutes=15),
    NUM_PROXIES=0,
)

_addresses = itertools.count(1)


def fresh_address() -> str:
    n = next(_addresses)
    return f"198.51.100.{n % 250 + 1}" if n < 250 else f"203.0.113.{n % 250 + 1}"


@pytest.fixture
def hasher_calls():
    """Reads how many times a password was hashed since the fixture was set up."""
    start = CountingHasher.calls

    def read() -> int:
        return CountingHasher.calls - start

    return read


def make_user(username: str, *, superuser: bool = False):
    return get_user_model().objects.create_user(
        username=username, password=PASSWORD, is_staff=True, is_superuser=superuser
    )


def login(username: str, password: str, *, address: str, forwarded: str | None = None):
    """One POST of the admin login form, from a new browser."""
    extra = {"REMOTE_ADDR": address}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return Client().post(
        LOGIN_URL, {"username": username, "password": password, "next": "/admin/"}, **extra
    )


def logged_in_ok(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def assert_lockout_page(response, *, max_seconds: float) -> None:
    assert response.status_code == 429
    assert response["Content-Type"].startswith("text/html")
    text = response.content.decode()
    assert "Too many failed logins" in text
    assert "Try again in" in text and "UTC" in text
    assert 1 <= int(response["Retry-After"]) <= max_seconds


@THROTTLE
def test_thirty_wrong_passwords_lock_the_address_and_the_right_one_is_refused(hasher_calls, caplog):
    # given a staff user
    make_user("alice")
    address = fresh_address()
    before = hasher_calls()

    # when 30 wrong passwords arrive in a row, each with a made-up X-Forwarded-For
    with caplog.at_level(logging.WARNING, logger="core.login_throttle"):
        responses = [
            login("alice", f"guess-{n}", address=address, forwarded=fresh_address())
            for n in range(30)
        ]

    # then the first 4 are the login form again, the 5th locks, all later ones are refused
    assert [r.status_code for r in responses] == [200] * (LIMIT - 1) + [429] * (31 - LIMIT)
    for response in responses[LIMIT - 1 :]:
        assert_lockout_page(response, max_seconds=15 * 60)
    # and only the 5 counted attempts reached the password hasher
    assert hasher_calls() - before == LIMIT

    # when the right password follows while the lock holds
    right = login("alice", PASSWORD, address=address)

    # then it is refused too, unchecked, and no session was opened
    assert_lockout_page(right, max_seconds=15 * 60)
    assert hasher_calls() - before == LIMIT
    assert "sessionid" not in right.cookies

    # and the audit has one row per counted failure, the last one the lockout
    failures = AccessFailureLog.objects.filter(username="alice").order_by("attempt_time")
    assert [f.ip_address for f in failures] == [address] * LIMIT
    assert [f.locked_out for f in failures] == [False] * (LIMIT - 1) + [True]
    attempt = AccessAttempt.objects.get(username="alice")
    assert (attempt.ip_address, attempt.failures_since_start) == (address, LIMIT)
    assert "guess-" not in attempt.post_data  # passwords are never stored
    # and a structured WARNING line for each failure, the lockout and each refusal
    events = [getattr(r, "event", None) for r in caplog.records if r.levelno == logging.WARNING]
    assert events.count("login_failed") == LIMIT - 1
    assert events.count("login_locked_out") == 1
    assert events.count("login_refused_locked_out") == 31 - LIMIT
    locked = [r for r in caplog.records if getattr(r, "event", None) == "login_locked_out"]
    assert (locked[0].username, locked[0].client_ip, locked[0].failures) == (
        "alice",
        address,
        LIMIT,
    )


@THROTTLE
def test_a_username_locks_from_any_address(hasher_calls):
    # given a staff user guessed at from LIMIT different addresses, once each
    make_user("bob")
    make_user("carol")
    addresses = [fresh_address() for _ in range(LIMIT)]
    statuses = [login("bob", "wrong", address=a).status_code for a in addresses]
    assert statuses == [200] * (LIMIT - 1) + [429]
    before = hasher_calls()

    # when the right password comes from yet another address
    response = login("bob", PASSWORD, address=fresh_address())

    # then the username is locked there too, without a password check
    assert_lockout_page(response, max_seconds=15 * 60)
    assert hasher_calls() == before
    # while those addresses (one failure each) are not locked for other users
    assert logged_in_ok(login("carol", PASSWORD, address=addresses[0]))


@THROTTLE
def test_an_address_locks_across_usernames(hasher_calls):
    # given one address trying LIMIT different usernames, existing or not
    make_user("dave")
    address = fresh_address()
    names = ["root", "admin", "staff", "operator", "dave"][:LIMIT]
    statuses = [login(name, "wrong", address=address).status_code for name in names]
    assert statuses == [200] * (LIMIT - 1) + [429]
    before = hasher_calls()

    # when a real user logs in correctly from that address
    response = login("dave", PASSWORD, address=address)

    # then the address is locked for every username, unchecked
    assert_lockout_page(response, max_seconds=15 * 60)
    assert hasher_calls() == before
    # and the same user from elsewhere is let in (one failure for "dave" is under the limit)
    assert logged_in_ok(login("dave", PASSWORD, address=fresh_address()))


@override_settings(
    PASSWORD_HASHERS=[f"{__name__}.CountingHasher"],
    AXES_FAILURE_LIMIT=LIMIT,
    AXES_COOLOFF_TIME=timedelta(seconds=2),
    NUM_PROXIES=0,
)
def test_the_lock_ends_after_the_cool_off(hasher_calls):
    # given a locked user and address, with a 2 s cool-off
    make_user("erin")
    address = fresh_address()
    for _ in range(LIMIT):
        login("erin", "wrong", address=address)
    locked = login("erin", PASSWORD, address=address)
    assert_lockout_page(locked, max_seconds=2)
    before = hasher_calls()

    # when the user keeps trying the right password until it is accepted
    tries = []

    def attempt() -> bool:
        response = login("erin", PASSWORD, address=address)
        tries.append(response.status_code)
        return logged_in_ok(response)

    eventually(attempt, timeout=30, interval=0.2, what="login accepted after the cool-off")

    # then it was let in once the cool-off had passed: the attempts refused meanwhile did
    # not extend the lock, and only the successful one ran the hasher
    assert tries[-1] == 302 and set(tries[:-1]) <= {429}
    assert hasher_calls() - before == 1
    # and the success cleared erin's failures
    assert not AccessAttempt.objects.filter(username="erin").exists()
    assert AccessLog.objects.filter(username="erin", ip_address=address).count() == 1


@THROTTLE
def test_a_success_resets_only_its_own_usernames_failures():
    # given a user who mistyped LIMIT - 1 times, then got it right
    make_user("frank")
    address = fresh_address()
    for _ in range(LIMIT - 1):
        assert login("frank", "typo", address=address).status_code == 200
    assert logged_in_ok(login("frank", PASSWORD, address=address))

    # then the slate is clean: LIMIT - 1 more typos still do not lock
    typos = [login("frank", "typo", address=fresh_address()).status_code for _ in range(LIMIT - 1)]
    assert typos == [200] * (LIMIT - 1)

    # given an attacker who holds a valid account and guesses another user's password
    make_user("mallory")
    make_user("victim")
    attacker = fresh_address()
    for _ in range(LIMIT - 1):
        assert login("victim", "guess", address=attacker).status_code == 200

    # when the attacker logs in as itself from the same address, hoping to reset the count
    assert logged_in_ok(login("mallory", PASSWORD, address=attacker))

    # then the victim's failures still count: the next guess locks
    response = login("victim", "guess", address=attacker)
    assert response.status_code == 429
    assert AccessAttempt.objects.filter(username="victim").get().failures_since_start == LIMIT


@THROTTLE
def test_behind_the_proxy_the_address_is_the_forwarded_one():
    # given nginx in front (one trusted proxy), and a client guessing through it
    make_user("gina")
    proxy, guesser, colleague = "172.18.0.5", fresh_address(), fresh_address()
    with override_settings(NUM_PROXIES=1):
        for n in range(LIMIT):
            login(f"user{n}", "wrong", address=proxy, forwarded=f"9.9.9.{n}, {guesser}")
        # when a colleague behind the same proxy logs in
        response = login("gina", PASSWORD, address=proxy, forwarded=colleague)
        refused = login("gina", PASSWORD, address=proxy, forwarded=f"8.8.8.8, {guesser}")
    # then only the guesser's address is locked, and the audit names it
    assert logged_in_ok(response)
    assert refused.status_code == 429
    assert set(AccessFailureLog.objects.values_list("ip_address", flat=True)) == {guesser}


def test_the_audit_is_read_only_and_for_superusers_only():
    # given a lockout on record
    with THROTTLE:
        address = fresh_address()
        for _ in range(LIMIT):
            login("nobody", "wrong", address=address)
    failure = AccessFailureLog.objects.filter(locked_out=True).get()
    changelist = reverse("admin:axes_accessfailurelog_changelist")
    change = reverse("admin:axes_accessfailurelog_change", args=[failure.pk])
    delete = reverse("admin:axes_accessfailurelog_delete", args=[failure.pk])

    # when a superuser looks
    superuser = logged_in(make_staff(f"root-{uuid.uuid4().hex[:6]}", superuser=True))
    listing = superuser.get(changelist)
    detail = superuser.get(change)

    # then the failure is listed with its address and shown without a save button
    assert listing.status_code == 200
    assert "nobody" in listing.content.decode() and address in listing.content.decode()
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    # and neither change nor delete is possible, even for a superuser
    assert superuser.post(change, {"username": "someone-else"}).status_code == 403
    assert superuser.post(delete, {"post": "yes"}).status_code == 403
    assert AccessFailureLog.objects.filter(pk=failure.pk, username="nobody").exists()
    # but a superuser may delete the live throttle row, which lifts the lock early
    attempt = AccessAttempt.objects.get(username="nobody")
    lift = reverse("admin:axes_accessattempt_delete", args=[attempt.pk])
    assert superuser.post(lift, {"post": "yes"}).status_code == 302
    assert not AccessAttempt.objects.exists()

    # when staff of every group look
    every_group = logged_in(
        make_staff(
            "ops",
            "Operations",
            "Catalog managers",
            "Read-only staff",
            "API client managers",
        )
    )
    # then they see none of it
    for url in (
        changelist,
        change,
        reverse("admin:axes_accessattempt_changelist"),
        reverse("admin:axes_accesslog_changelist"),
    ):
        assert every_group.get(url).status_code == 403, url


@THROTTLE
def test_test_client_logins_still_work():
    # given a staff user
    user = make_user("harry")

    # then force_login (what the admin tests use) works as before
    assert logged_in(user).get("/admin/").status_code == 200
    # and client.login works when given the request that axes attributes the attempt to
    client = Client()
    assert client.login(request=HttpRequest(), username="harry", password=PASSWORD)
    assert client.get("/admin/").status_code == 200
    # while a password check that names no request cannot be throttled, so it is refused
    with pytest.raises(ValueError, match="request"):
        authenticate(username="harry", password=PASSWORD)
