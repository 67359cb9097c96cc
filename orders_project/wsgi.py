"""WSGI entry point for gunicorn."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orders_project.settings")

# Django first (it sets up settings); the wrapper reads chunked request bodies for it.
_django_application = get_wsgi_application()

from core.wsgi_body import ChunkedBodyMiddleware, UnreadBodyDrain  # noqa: E402

# The drain outermost: it sees the body as gunicorn delivers it (sized or de-chunked).
application = UnreadBodyDrain(ChunkedBodyMiddleware(_django_application))
