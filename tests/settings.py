"""Test settings: the real ones, with a fixed secret so no one has to export one."""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")

from orders_project.settings import *  # noqa: E402,F403
