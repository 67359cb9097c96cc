"""The event contract: the AsyncAPI document of the stream and the JSON Schema of every event
type and schema version, gathered for the service to serve at /api/events/.

outbox knows no domain event: each app that emits events keeps their schemas next to its
producers (`<app>/event_schemas/<type>.v<N>.json`) and registers that folder in its
AppConfig.ready(); outbox brings only the envelope's shared definitions
(`outbox/event_schemas/envelope.v1.json`). The AsyncAPI document, which names every
message, belongs to the wiring (`EVENT_CONTRACT_DOCUMENT`, orders_project/asyncapi.yaml). Its
`$ref`s name schema files by their bare names: served, they resolve against /api/events/ to
/api/events/schemas/<name>; `manage.py export_event_contract DIR` writes the document and every
schema side by side for tools that read files.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

ENVELOPE_FILE = Path(__file__).resolve().parent / "event_schemas" / "envelope.v1.json"

_schema_folders: list[Path] = [ENVELOPE_FILE.parent]


def register_event_schemas(folder: Path) -> None:
    """Publish every `*.json` of `folder` as an event schema (an app's ready())."""
    if folder not in _schema_folders:
        _schema_folders.append(folder)
        event_schema_texts.cache_clear()


def event_schema_file_name(event_type: str, schema_version: int | str) -> str:
    """The schema that an event of this type and schema version follows."""
    return f"{event_type}.v{schema_version}.json"


def event_type_and_version(file_name: str) -> tuple[str, str]:
    """("order.paid", "2") for "order.paid.v2.json"."""
    event_type, version = file_name.removesuffix(".json").rsplit(".v", 1)
    return event_type, version


@cache
def event_schema_texts() -> dict[str, bytes]:
    """{file name: its bytes} for every registered schema file, the envelope's included.
    Names are one namespace (they are served side by side): a name twice is an error."""
    texts: dict[str, bytes] = {}
    for folder in _schema_folders:
        for path in sorted(folder.glob("*.json")):
            if path.name in texts:
                raise ValueError(f"event schema {path.name} is registered twice ({folder})")
            texts[path.name] = path.read_bytes()
    return texts


def event_schema(file_name: str) -> dict[str, Any] | None:
    text = event_schema_texts().get(file_name)
    return None if text is None else json.loads(text)


def event_types() -> list[str]:
    """Every event type the registered schemas describe (in any schema version), sorted."""
    return sorted(
        {
            event_type_and_version(name)[0]
            for name in event_schema_texts()
            if name != ENVELOPE_FILE.name
        }
    )


@cache
def asyncapi_text() -> bytes:
    return Path(settings.EVENT_CONTRACT_DOCUMENT).read_bytes()


@cache
def asyncapi_document() -> dict[str, Any]:
    return yaml.safe_load(asyncapi_text())
