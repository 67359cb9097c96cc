"""Production (ENVIRONMENT=production) is safe with only the required settings given
(issue 9, items 1, 3 and 4; SPEC §7).

Start-up checks run the real settings in a fresh interpreter with a clean environment
(nothing inherited from this test run), the way gunicorn, Celery and `manage.py` load them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from email.message import Message
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import RequestFactory
from django.views.debug import technical_500_response

from catalog.models import Product
from scripts.processes import database_url, start_process, web_command
from scripts.servers import free_port

ROOT = Path(__file__).resolve().parents[2]

# Strong, and not published anywhere but here.
STRONG_SECRET_KEY = "prod-test-aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5kL7nP9rS1tV3xZ5"
STRONG_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"production-tests-webhook-key-32b").decode()
DEV_WEBHOOK_SECRET = "whsec_ZGV2LW9ubHktd2ViaG9vay1zZWNyZXQtY2hhbmdlLW1l"

# Exactly what production requires, and nothing else.
REQUIRED = {
    "ENVIRONMENT": "production",
    "SECRET_KEY": STRONG_SECRET_KEY,
    "ALLOWED_HOSTS": "orders.example.com",
    "PAYMENT_WEBHOOK_SECRETS": STRONG_WEBHOOK_SECRET,
    "DATABASE_URL": "postgres://orders:db-password@127.0.0.1:5432/orders",
    "REDIS_URL": "redis://:redis-password@127.0.0.1:6379/0",
}

SETTINGS_PROBE = """
import json
from django.conf import settings
names = [
    "IS_PRODUCTION", "DEBUG", "SECURE_SSL_REDIRECT", "SECURE_REDIRECT_EXEMPT",
    "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_PROXY_SSL_HEADER",
    "ALLOW_PLAIN_HTTP", "PAYMENT_WEBHOOK_SECRETS", "DEFAULT_EXCEPTION_REPORTER_FILTER",
]
print(json.dumps({name: getattr(settings, name) for name in names}))
"""


def _clean_env(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "DJANGO_SETTINGS_MODULE": "orders_project.settings",
        # make run's local key file must not count: only the environment does here.
        "LOCAL_SECRET_KEY_FILE": str(tmp_path / "no-such-key"),
        **env,
    }


def _run(tmp_path: Path, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv],
        env=_clean_env(tmp_path, env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _setup_django(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return _run(tmp_path, ["-c", "import django; django.setup(); print('ok')"], env)


def _check_deploy(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return _run(
        tmp_path,
        [str(ROOT / "manage.py"), "check", "--deploy", "--fail-level", "WARNING"],
        env,
    )


def _settings_of(tmp_path: Path, env: dict[str, str]) -> dict:
    result = _run(tmp_path, ["-c", SETTINGS_PROBE], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _assert_refused(result: subprocess.CompletedProcess, *names: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "ImproperlyConfigured" in result.stderr, result.stderr
    for name in names:
        assert name in result.stderr, result.stderr


def _without(name: str) -> dict[str, str]:
    return {key: value for key, value in REQUIRED.items() if key != name}


def _whsec(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


# --------------------------------------------------------------------------- start-up


def test_check_deploy_passes_with_only_the_required_settings(tmp_path):
    # given production with only the required settings
    # when Django starts and `check --deploy --fail-level WARNING` runs
    setup = _setup_django(tmp_path, REQUIRED)
    check = _check_deploy(tmp_path, REQUIRED)
    # then both succeed without a single warning
    assert setup.returncode == 0, setup.stderr
    assert setup.stdout.strip() == "ok"
    assert check.returncode == 0, check.stderr
    assert "System check identified no issues (0 silenced)." in check.stdout


def test_https_protections_default_to_secure_in_production(tmp_path):
    # given production with only the required settings, when the settings load
    values = _settings_of(tmp_path, REQUIRED)
    # then every HTTPS protection is on
    assert values["IS_PRODUCTION"] is True
    assert values["DEBUG"] is False
    assert values["SECURE_SSL_REDIRECT"] is True
    assert values["SECURE_HSTS_SECONDS"] == 365 * 24 * 3600
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert values["SECURE_HSTS_PRELOAD"] is True
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["CSRF_COOKIE_SECURE"] is True
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["ALLOW_PLAIN_HTTP"] is False
    assert values["DEFAULT_EXCEPTION_REPORTER_FILTER"].endswith(
        "debug_filter.CredentialsHidingFilter"
    )


def test_each_https_protection_has_its_own_override(tmp_path):
    # given production with each protection overridden by its own variable
    env = {
        **REQUIRED,
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_HSTS_SECONDS": "300",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "false",
        "SECURE_HSTS_PRELOAD": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_SCHEME,https",
    }
    # when the settings load, then each follows its variable
    values = _settings_of(tmp_path, env)
    assert values["SECURE_SSL_REDIRECT"] is False
    assert values["SECURE_HSTS_SECONDS"] == 300
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is False
    assert values["SECURE_HSTS_PRELOAD"] is False
    assert values["SESSION_COOKIE_SECURE"] is False
    assert values["CSRF_COOKIE_SECURE"] is False
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_SCHEME", "https"]
    # and an empty SECURE_PROXY_SSL_HEADER turns it off
    assert (
        _settings_of(tmp_path, {**REQUIRED, "SECURE_PROXY_SSL_HEADER": ""})[
            "SECURE_PROXY_SSL_HEADER"
        ]
        is None
    )


def test_allow_plain_http_is_an_explicit_opt_out_that_check_deploy_reports(tmp_path):
    # given production with the plain-http opt-out (the compose demo on http://localhost)
    env = {**REQUIRED, "ALLOW_PLAIN_HTTP": "true"}
    # when the settings load
    values = _settings_of(tmp_path, env)
    # then redirect, HSTS and secure cookies are off; the proxy header stays
    assert values["ALLOW_PLAIN_HTTP"] is True
    assert values["SECURE_SSL_REDIRECT"] is False
    assert values["SECURE_HSTS_SECONDS"] == 0
    assert values["SESSION_COOKIE_SECURE"] is False
    assert values["CSRF_COOKIE_SECURE"] is False
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    # and the deploy check says so (the service still starts)
    check = _check_deploy(tmp_path, env)
    assert check.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in check.stderr, check.stderr


def test_local_settings_keep_plain_http_and_the_dev_webhook_secret(tmp_path):
    # given no ENVIRONMENT (make run, tests) and nothing but a key
    env = {"SECRET_KEY": STRONG_SECRET_KEY, "ALLOW_PLAIN_HTTP": "false"}
    # when the settings load
    values = _settings_of(tmp_path, env)
    # then http://127.0.0.1 works and the dev webhook secret is the default
    assert values["IS_PRODUCTION"] is False
    assert values["SECURE_SSL_REDIRECT"] is False
    assert values["SECURE_HSTS_SECONDS"] == 0
    assert values["SESSION_COOKIE_SECURE"] is False
    assert values["CSRF_COOKIE_SECURE"] is False
    assert values["SECURE_PROXY_SSL_HEADER"] is None
    assert values["ALLOW_PLAIN_HTTP"] is False
    assert values["PAYMENT_WEBHOOK_SECRETS"] == [DEV_WEBHOOK_SECRET]


def test_the_test_settings_are_not_production():
    assert django_settings.IS_PRODUCTION is False
    assert django_settings.SECURE_SSL_REDIRECT is False


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "name", ["SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL", "PAYMENT_WEBHOOK_SECRETS"]
)
@pytest.mark.parametrize("how", ["missing", "empty"])
def test_production_refuses_a_missing_required_setting(tmp_path, name, how):
    # given production without one required setting (unset, or set to blanks)
    env = _without(name) if how == "missing" else {**REQUIRED, name: "  "}
    # when Django starts, then it refuses, naming the setting
    _assert_refused(_setup_django(tmp_path, env), name)


def test_production_names_every_missing_setting_at_once(tmp_path):
    result = _setup_django(tmp_path, {"ENVIRONMENT": "production"})
    _assert_refused(
        result,
        "SECRET_KEY",
        "ALLOWED_HOSTS",
        "DATABASE_URL",
        "REDIS_URL",
        "PAYMENT_WEBHOOK_SECRETS",
    )


UNUSABLE_WEBHOOK_SECRETS = [
    ("only separators", " , "),
    ("short key", _whsec(b"k" * 23)),
    ("key too long", _whsec(b"k" * 65)),
    ("no whsec_ prefix", base64.b64encode(b"production-tests-webhook-key-32b").decode()),
    ("not base64", "whsec_not-base64-at-all!!"),
    (
        "bad padding",
        "whsec_" + base64.b64encode(b"production-tests-webhook-key-32b").decode()[:-2],
    ),
    ("the dev default", DEV_WEBHOOK_SECRET),
    ("the dev default second in a rotation", f"{STRONG_WEBHOOK_SECRET},{DEV_WEBHOOK_SECRET}"),
]


@pytest.mark.parametrize(
    ("case", "secret"), UNUSABLE_WEBHOOK_SECRETS, ids=[case for case, _ in UNUSABLE_WEBHOOK_SECRETS]
)
def test_production_refuses_an_unusable_webhook_secret(tmp_path, case, secret):
    # given production with a webhook secret that anyone could guess or that is malformed
    env = {**REQUIRED, "PAYMENT_WEBHOOK_SECRETS": secret}
    # when Django starts
    setup = _setup_django(tmp_path, env)
    # then it refuses, naming the variable but never echoing the secret
    _assert_refused(setup, "PAYMENT_WEBHOOK_SECRETS")
    for part in secret.split(","):
        if part.strip().removeprefix("whsec_"):
            assert part.strip().removeprefix("whsec_") not in setup.stderr


@pytest.mark.parametrize("secret", [None, DEV_WEBHOOK_SECRET])
def test_manage_py_check_refuses_a_missing_or_default_webhook_secret(tmp_path, secret):
    # given production without a webhook secret, or with the published dev one
    env = _without("PAYMENT_WEBHOOK_SECRETS")
    if secret is not None:
        env["PAYMENT_WEBHOOK_SECRETS"] = secret
    # when `manage.py check --deploy` runs, then it refuses, naming the variable
    _assert_refused(_check_deploy(tmp_path, env), "PAYMENT_WEBHOOK_SECRETS")


def test_the_longest_and_shortest_standard_webhooks_keys_are_accepted(tmp_path):
    env = {**REQUIRED, "PAYMENT_WEBHOOK_SECRETS": f"{_whsec(b'a' * 24)},{_whsec(b'b' * 64)}"}
    result = _setup_django(tmp_path, env)
    assert result.returncode == 0, result.stderr


def _published_webhook_secrets() -> list[str]:
    found: set[str] = set()
    for path in [ROOT / "README.md", ROOT / "docker-compose.yml", *ROOT.glob("docs/**/*.md")]:
        if path.is_file():
            found.update(re.findall(r"whsec_[A-Za-z0-9+/=]+", path.read_text()))
    return sorted(found)


def test_every_webhook_secret_printed_in_the_docs_is_refused_in_production(tmp_path):
    # given every whsec_ value the README, compose file and docs print
    published = _published_webhook_secrets()
    assert DEV_WEBHOOK_SECRET in published
    # when production starts with it, then it is refused as published
    result = _setup_django(tmp_path, {**REQUIRED, "PAYMENT_WEBHOOK_SECRETS": ",".join(published)})
    _assert_refused(result, "PAYMENT_WEBHOOK_SECRETS")
    for secret in published:
        one = _setup_django(tmp_path, {**REQUIRED, "PAYMENT_WEBHOOK_SECRETS": secret})
        assert "published default" in one.stderr or "is not a whsec_" in one.stderr, secret


WEAK_SECRET_KEYS = [
    ("one character repeated", "x" * 50),
    ("four distinct characters", "abcd" * 20),
    ("49 characters", STRONG_SECRET_KEY[:49]),
    ("django-insecure- prefix", "django-insecure-" + STRONG_SECRET_KEY),
]


@pytest.mark.parametrize(("case", "key"), WEAK_SECRET_KEYS, ids=[c for c, _ in WEAK_SECRET_KEYS])
def test_production_refuses_a_weak_secret_key(tmp_path, case, key):
    # given production with a key that fails Django's own strength rule
    env = {**REQUIRED, "SECRET_KEY": key}
    # when Django starts, then it refuses, naming SECRET_KEY
    _assert_refused(_setup_django(tmp_path, env), "SECRET_KEY")


@pytest.mark.parametrize("spelling", ["Production", "PRODUCTION", " production "])
def test_environment_is_compared_case_insensitively(tmp_path, spelling):
    # given ENVIRONMENT spelled differently, when the settings load, then it is production
    values = _settings_of(tmp_path, {**REQUIRED, "ENVIRONMENT": spelling})
    assert values["IS_PRODUCTION"] is True
    assert values["SECURE_SSL_REDIRECT"] is True


def test_mixed_case_production_refuses_what_production_refuses(tmp_path):
    # given ENVIRONMENT=Production with a weak key, or with the dev webhook secret
    weak = {**REQUIRED, "ENVIRONMENT": "Production", "SECRET_KEY": "x" * 50}
    dev_secret = {
        **REQUIRED,
        "ENVIRONMENT": "Production",
        "PAYMENT_WEBHOOK_SECRETS": DEV_WEBHOOK_SECRET,
    }
    # when Django starts, then it refuses both
    _assert_refused(_setup_django(tmp_path, weak), "SECRET_KEY")
    _assert_refused(_setup_django(tmp_path, dev_secret), "PAYMENT_WEBHOOK_SECRETS")


def test_a_malformed_metrics_network_is_refused_at_start_up(tmp_path):
    env = {"SECRET_KEY": STRONG_SECRET_KEY, "METRICS_ALLOWED_NETWORKS": "10.0.0.0/8,not-a-net"}
    _assert_refused(_setup_django(tmp_path, env), "METRICS_ALLOWED_NETWORKS")


# --------------------------------------------------------------------------- seed_demo


@pytest.mark.django_db
def test_seed_demo_refuses_to_run_in_production(settings):
    # given production
    settings.IS_PRODUCTION = True
    users_before = get_user_model().objects.count()
    products_before = Product.objects.count()
    # when seed_demo runs, then it refuses and points at the real bootstrap commands
    with pytest.raises(CommandError, match="createsuperuser") as refused:
        call_command("seed_demo")
    assert "create_api_client" in str(refused.value)
    # and it created nothing
    assert get_user_model().objects.count() == users_before
    assert not get_user_model().objects.filter(username="staff").exists()
    assert Product.objects.count() == products_before


def test_seed_demo_command_line_refuses_in_production(tmp_path):
    # given the production settings of a real deployment, when `manage.py seed_demo` runs
    result = _run(tmp_path, [str(ROOT / "manage.py"), "seed_demo"], REQUIRED)
    # then it exits non-zero before touching the database, with the way forward
    assert result.returncode != 0
    assert "createsuperuser" in result.stderr, result.stderr
    assert "staff-demo-password" not in result.stdout


@pytest.mark.django_db
def test_seed_demo_still_runs_locally(settings):
    settings.IS_PRODUCTION = False
    call_command("seed_demo", verbosity=0)
    assert get_user_model().objects.filter(username="staff", is_superuser=True).exists()


# --------------------------------------------------------------------------- debug page


def _raise_with_a_url_in_a_local():
    # Assembled at run time: the page also shows this source line, which must not be
    # what hides or reveals the value.
    broker = "redis://:" + "frame-local-" + "password@redis:6379/0"
    raise RuntimeError(f"cannot reach the broker ({len(broker)})")


def _exc_info_of(function):
    # Caught here, so the traceback starts in this frame and not in the test's (whose
    # source lines, shown on the page, hold the passwords it plants).
    try:
        function()
    except RuntimeError:
        return sys.exc_info()
    raise AssertionError("expected RuntimeError")


def test_the_debug_page_never_shows_a_url_password(settings):
    # given connection URLs with passwords in settings, in the request's environment
    # (runserver copies os.environ into META) and in a frame's local variable
    settings.DEBUG = True
    settings.DATABASE_URL = "postgres://orders:db-url-password@db:5432/orders"
    settings.REDIS_URL = "redis://:redis-url-password@redis:6379/0"
    settings.EVENT_STREAM_REDIS_URL = "rediss://events:stream-url-password@redis:6380/1"
    settings.CELERY_BROKER_URL = "redis://:broker-url-password@redis:6379/2"
    settings.SENTRY_DSN = "https://dsn-public-key@sentry.example.com/1"
    settings.CACHE_LOCATIONS = {"default": {"LOCATION": "redis://:nested-location-password@r/0"}}
    request = RequestFactory().get(
        "/boom", DATABASE_URL="postgres://orders:meta-url-password@db/orders"
    )
    exc_info = _exc_info_of(_raise_with_a_url_in_a_local)
    # when Django renders its technical 500 page
    response = technical_500_response(request, *exc_info)
    page = response.content.decode()
    # then the page is the debug page, and no password (nor the DSN's key) is on it
    assert response.status_code == 500
    assert "RuntimeError" in page
    assert "_raise_with_a_url_in_a_local" in page
    for password in (
        "db-url-password",
        "redis-url-password",
        "stream-url-password",
        "broker-url-password",
        "dsn-public-key",
        "nested-location-password",
        "meta-url-password",
        "frame-local-password",
    ):
        assert password not in page, password
    # while the names stay visible, so the page is still useful
    assert "DATABASE_URL" in page
    assert "CELERY_BROKER_URL" in page


# --------------------------------------------------------------------------- a real gunicorn


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    """One GET that does not follow redirects."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - http only
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.mark.slow
@pytest.mark.django_db
def test_production_gunicorn_redirects_to_https_but_not_its_probes(tmp_path):
    # given a real gunicorn with the production settings, reached over plain http
    port = free_port()
    names = f"test-prod-{uuid.uuid4().hex[:8]}"
    env = _clean_env(
        tmp_path,
        {
            **REQUIRED,
            "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": database_url(connection.settings_dict),
            "REDIS_URL": django_settings.REDIS_URL,
            "CACHE_KEY_PREFIX": f"{names}:cache",
            "RATE_LIMIT_KEY_PREFIX": f"{names}:rl",
            "EVENT_STREAM": f"{names}:events",
            "CELERY_QUEUE": f"{names}:celery",
            "BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": "1",
            "LOG_LEVEL": "WARNING",
        },
    )
    web = start_process("web", web_command(), env, tmp_path / "web.log")
    base = f"http://127.0.0.1:{port}"
    try:
        # when the container healthcheck calls /healthz over http (urllib follows
        # redirects: a 301 to https would fail here)
        web.wait_http_ok(f"{base}/healthz", timeout=60, what="production gunicorn up")
        # then the probes answer in place
        assert _get(f"{base}/healthz")[0] == 200
        assert _get(f"{base}/readyz")[0] in (200, 503)
        metrics_status, metrics_headers, _ = _get(f"{base}/metrics")
        assert metrics_status == 403  # served in place, and closed: nothing configured
        assert metrics_headers["Content-Type"] == "application/problem+json"
        # and everything else is sent to https
        status, headers, _ = _get(f"{base}/admin/login/")
        assert status == 301
        assert headers["Location"] == f"https://127.0.0.1:{port}/admin/login/"
        # while a request the proxy marks as https gets HSTS and Secure cookies
        status, headers, _ = _get(f"{base}/admin/login/", {"X-Forwarded-Proto": "https"})
        assert status == 200, web.log_tail()
        assert headers["Strict-Transport-Security"] == (
            "max-age=31536000; includeSubDomains; preload"
        )
        cookies = headers.get_all("Set-Cookie") or []
        csrf_cookie = next(cookie for cookie in cookies if cookie.startswith("csrftoken="))
        assert "; secure" in csrf_cookie.lower(), csrf_cookie
    finally:
        web.stop()
