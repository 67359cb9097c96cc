"""`python manage.py tail_events`: print the event stream, then follow new entries."""

import json
from typing import cast

from django.conf import settings
from django.core.management.base import BaseCommand

from outbox.sink import sink_client

# What this client (RESP2, no decode_responses) returns; redis-py types the union of all modes.
Entries = list[tuple[bytes, dict[bytes, bytes]]]


class Command(BaseCommand):
    help = "Print entries of EVENT_STREAM (the last --count, then new ones as they arrive)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--count",
            type=int,
            default=20,
            help="how many of the latest entries to print first (default: %(default)s)",
        )
        parser.add_argument(
            "--no-follow",
            action="store_true",
            help="exit after those entries instead of waiting for new ones",
        )

    def handle(self, *args, count: int, no_follow: bool, **options):
        client = sink_client()
        stream = settings.EVENT_STREAM
        last_id: bytes | str = "0-0"
        for entry_id, fields in reversed(cast(Entries, client.xrevrange(stream, count=count))):
            last_id = self._print(entry_id, fields)
        while not no_follow:
            replies = client.xread({stream: last_id}, block=1000) or []
            for _, entries in cast(list[tuple[bytes, Entries]], replies):
                for entry_id, fields in entries:
                    last_id = self._print(entry_id, fields)

    def _print(self, entry_id: bytes, fields: dict[bytes, bytes]) -> bytes:
        decoded = {key.decode(): value.decode() for key, value in fields.items()}
        decoded["payload"] = json.loads(decoded.get("payload", "null"))
        self.stdout.write(json.dumps({"entry": entry_id.decode(), **decoded}))
        return entry_id
