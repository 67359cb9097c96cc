"""`python manage.py export_event_contract DIR`: the event contract as files, side by side as
the service serves them (asyncapi.yaml and schemas/<name>), for tools that read files."""

from pathlib import Path

from django.core.management.base import BaseCommand

from outbox.event_contract import asyncapi_text, event_schema_texts


class Command(BaseCommand):
    help = (
        "Write the AsyncAPI document of the event stream and every event schema it refers "
        "to into a folder (DIR/asyncapi.yaml, DIR/schemas/*.json), as /api/events/ serves them."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "folder", help="where to write them (created if missing; files there are replaced)"
        )

    def handle(self, *args, folder: str, **options):
        target = Path(folder)
        schemas = target / "schemas"
        schemas.mkdir(parents=True, exist_ok=True)
        (target / "asyncapi.yaml").write_bytes(asyncapi_text())
        for name, text in event_schema_texts().items():
            (schemas / name).write_bytes(text)
        self.stdout.write(f"{target / 'asyncapi.yaml'} and {len(event_schema_texts())} schemas")
