"""`python manage.py create_api_client NAME`: prints the new key once."""

from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction

from clients.services import api_client_create


class Command(BaseCommand):
    help = "Create an API client and print its key (shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="unique name of the client (who is calling), e.g. shop-eu")

    def handle(self, *args, name: str, **options):
        name = name.strip()
        if not name:
            raise CommandError("the API client needs a name")
        try:
            # A savepoint, so a clash leaves a caller's transaction usable.
            with transaction.atomic():
                client, key = api_client_create(name=name)
        except IntegrityError as exc:
            raise CommandError(f"an API client named {name!r} already exists") from exc
        self.stderr.write(f"Created API client {client.name} ({client.id}); store this key now:")
        # The key alone on stdout, so scripts can capture it: `KEY=$(manage.py ...)`.
        self.stdout.write(key)
