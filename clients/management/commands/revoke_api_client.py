"""`python manage.py revoke_api_client NAME`: the client's key is refused from now on."""

from django.core.management.base import BaseCommand, CommandError

from clients.models import ApiClient
from clients.services import api_client_revoke


class Command(BaseCommand):
    help = "Revoke an API client's key (every web process refuses it within a second)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="name of the client whose key stops working")

    def handle(self, *args, name: str, **options):
        client = ApiClient.objects.filter(name=name.strip()).first()
        if client is None:
            raise CommandError(f"no API client named {name.strip()!r}")
        if api_client_revoke(client_id=client.pk):
            self.stderr.write(f"Revoked the key of API client {client.name} ({client.id}).")
        else:
            self.stderr.write(f"API client {client.name} ({client.id}) was already revoked.")
