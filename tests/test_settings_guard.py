"""Production refuses unsafe settings at start-up (SPEC §7)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _start_django(tmp_path, **env: str) -> subprocess.CompletedProcess:
    """Import the real settings in a fresh interpreter, from a directory with no .local/."""
    # Nothing of this run's own configuration leaks in (DATABASE_URL, PAYMENT_*, ...).
    clean = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    clean.update(
        env,
        DJANGO_SETTINGS_MODULE="orders_project.settings",
        PYTHONPATH=str(ROOT),
        # make run's local key file must not count: only the environment does here.
        LOCAL_SECRET_KEY_FILE=str(tmp_path / "no-such-key"),
    )
    code = "import orders_project.settings; print('ok')"
    return subprocess.run(
        [sys.executable, "-c", code],
        env=clean,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("secret", ["", "insecure-default-change-me"])
def test_debug_off_refuses_empty_or_default_secret_key(tmp_path, secret):
    # given DEBUG off (the default) and no usable key, when the settings load
    result = _start_django(tmp_path, SECRET_KEY=secret)
    # then start-up fails naming the problem
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_debug_on(tmp_path):
    result = _start_django(tmp_path, SECRET_KEY="x" * 50, DEBUG="true", ENVIRONMENT="production")
    assert result.returncode != 0
    assert "DEBUG must be off" in result.stderr


def test_safe_production_settings_start(tmp_path):
    # given production with every required setting, strong secrets among them
    # (tests/security/test_production_settings.py covers each production refusal)
    result = _start_django(
        tmp_path,
        ENVIRONMENT="production",
        SECRET_KEY="guard-test-aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5kL7nP9rS1",
        ALLOWED_HOSTS="orders.example.com",
        DATABASE_URL="postgres://orders@127.0.0.1:5432/orders",
        REDIS_URL="redis://127.0.0.1:6379/0",
        PAYMENT_WEBHOOK_SECRETS="whsec_" + base64.b64encode(b"g" * 32).decode(),
    )
    # when the settings load, then they do
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
