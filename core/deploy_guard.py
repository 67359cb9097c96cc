"""What production refuses to start with: weak secrets and published defaults.

Pure functions over plain values, so `orders_project/settings.py` can call them while it
is still being imported (before Django is set up). Each returns the reason a value is
unacceptable, or None; settings turn a reason into ImproperlyConfigured, which stops
gunicorn, Celery and every `manage.py` command (including `check`) alike. No message
repeats the secret it refuses: start-up errors end up in logs.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence

# Django's own rule for a strong SECRET_KEY (what `check --deploy` calls security.W009).
from django.core.checks.security.base import (
    SECRET_KEY_INSECURE_PREFIX,
    SECRET_KEY_MIN_LENGTH,
    SECRET_KEY_MIN_UNIQUE_CHARACTERS,
)

# Standard Webhooks: the key behind "whsec_" is 24 to 64 random bytes.
WEBHOOK_KEY_MIN_BYTES = 24
WEBHOOK_KEY_MAX_BYTES = 64

KEY_GENERATOR_COMMAND = "python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
WEBHOOK_KEY_GENERATOR_COMMAND = (
    "python3 -c 'import base64,secrets; "
    'print("whsec_"+base64.b64encode(secrets.token_bytes(32)).decode())\''
)


def secret_key_problem(secret_key: str) -> str | None:
    """Why SECRET_KEY is too weak for production (Django's length/variety rule), or None."""
    if (
        len(secret_key) >= SECRET_KEY_MIN_LENGTH
        and len(set(secret_key)) >= SECRET_KEY_MIN_UNIQUE_CHARACTERS
        and not secret_key.startswith(SECRET_KEY_INSECURE_PREFIX)
    ):
        return None
    return (
        f"SECRET_KEY is too weak for ENVIRONMENT=production: it needs at least "
        f"{SECRET_KEY_MIN_LENGTH} characters, at least {SECRET_KEY_MIN_UNIQUE_CHARACTERS} "
        f"different ones, and no {SECRET_KEY_INSECURE_PREFIX!r} prefix "
        f"(generate one: {KEY_GENERATOR_COMMAND})"
    )


def webhook_key_bytes(secret: str) -> bytes | None:
    """The key behind a `whsec_<base64>` secret, or None if it is not that form."""
    if not secret.startswith("whsec_"):
        return None
    try:
        # validate=True: stray characters are an error, not silently dropped.
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return None


def webhook_secrets_problem(secrets: Sequence[str], *, published: Iterable[str]) -> str | None:
    """Why PAYMENT_WEBHOOK_SECRETS cannot sign production webhooks, or None.

    `published` are secrets anyone can read (the development default, examples in the
    docs): whoever knows one can sign `payment.succeeded` for any order. They are
    compared by key bytes, so re-encoding a published key does not get it through.
    """
    hint = f"generate one: {WEBHOOK_KEY_GENERATOR_COMMAND}"
    if not secrets:
        return f"PAYMENT_WEBHOOK_SECRETS must be set when ENVIRONMENT=production ({hint})"
    published_keys = {key for key in map(webhook_key_bytes, published) if key is not None}
    for position, secret in enumerate(secrets, start=1):
        where = f"PAYMENT_WEBHOOK_SECRETS (entry {position} of {len(secrets)})"
        key = webhook_key_bytes(secret)
        if key is None:
            return f"{where} is not a whsec_<base64> secret ({hint})"
        if not WEBHOOK_KEY_MIN_BYTES <= len(key) <= WEBHOOK_KEY_MAX_BYTES:
            return (
                f"{where} has a {len(key)}-byte key; Standard Webhooks keys are "
                f"{WEBHOOK_KEY_MIN_BYTES} to {WEBHOOK_KEY_MAX_BYTES} bytes ({hint})"
            )
        if key in published_keys:
            return f"{where} is a published default secret: anyone can sign webhooks ({hint})"
    return None
