"""Keep credentials off Django's debug page and out of error reports.

Django hides settings whose names look secret (API, TOKEN, KEY, SECRET, PASS, ...), but
our connection strings are named *_URL (DATABASE_URL, REDIS_URL, CELERY_BROKER_URL,
EVENT_STREAM_REDIS_URL) and carry their password inline, and the same URL reappears
where no name gives it away (CACHES["default"]["LOCATION"], a frame's local variable,
os.environ copied into request.META by runserver). So: hide URL/DSN names as well, and
mask the password of any `scheme://user:password@` string that is still shown.
"""

from __future__ import annotations

import re
from typing import Any

from django.views.debug import SafeExceptionReporterFilter

# scheme://user:password@ — the user may be empty (redis://:password@host).
_URL_PASSWORD = re.compile(r"(?P<prefix>[a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@\s]+@", re.I)


def mask_url_passwords(value: Any, substitute: str) -> Any:
    """value with every URL password replaced; anything not a string comes back as is."""
    if not isinstance(value, str):
        return value
    # str(): lazy strings pass isinstance but not re; keep the original when unchanged.
    text = str(value)
    masked = _URL_PASSWORD.sub(lambda m: f"{m['prefix']}{substitute}@", text)
    return value if masked == text else masked


class CredentialsHidingFilter(SafeExceptionReporterFilter):
    # Django's own list, plus URL and DSN.
    hidden_settings = re.compile(
        "API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|URL|DSN", flags=re.I
    )

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        return mask_url_passwords(super().cleanse_setting(key, value), self.cleansed_substitute)

    def cleanse_special_types(self, request: Any, value: Any) -> Any:
        # Traceback frame variables: a connection URL held in a local is masked too.
        return mask_url_passwords(
            super().cleanse_special_types(request, value), self.cleansed_substitute
        )
