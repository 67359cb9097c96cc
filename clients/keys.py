"""API key format and hashing. Keys are 256-bit random secrets, so one SHA-256 is enough:
a slow password hash would buy nothing against guessing and cost every request."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX_LENGTH = 8


def api_key_generate() -> tuple[str, str]:
    """Return (key, prefix). The key is shown once; the prefix identifies it in the admin."""
    prefix = secrets.token_hex(KEY_PREFIX_LENGTH // 2)
    return f"ok_{prefix}_{secrets.token_urlsafe(32)}", prefix


def api_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
