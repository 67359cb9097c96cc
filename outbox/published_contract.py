"""The event contract as files: the AsyncAPI document of the stream and the JSON Schema of
every event type and schema version (outbox/contract/), read once per process.

The files are the contract; the producers (orders/events.py, payments/webhook_effects.py)
write payloads that follow them, and tests/events checks both sides.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

CONTRACT_DIR = Path(__file__).resolve().parent / "contract"
ASYNCAPI_FILE = CONTRACT_DIR / "asyncapi.yaml"
SCHEMAS_DIR = CONTRACT_DIR / "schemas"
# The definitions every event schema shares (not an event type of its own).
ENVELOPE_NAME = "envelope.v1"


def event_schema_file_name(event_type: str, schema_version: int | str) -> str:
    """The schema that an event of this type and schema version follows."""
    return f"{event_type}.v{schema_version}.json"


@cache
def asyncapi_text() -> bytes:
    return ASYNCAPI_FILE.read_bytes()


@cache
def asyncapi_document() -> dict[str, Any]:
    return yaml.safe_load(asyncapi_text())


@cache
def event_schema_texts() -> dict[str, bytes]:
    """{file name: its bytes} for every schema file, the envelope's definitions included."""
    return {path.name: path.read_bytes() for path in sorted(SCHEMAS_DIR.glob("*.json"))}


def event_types() -> list[str]:
    """Every event type the contract describes (in any schema version), sorted."""
    names = (name.removesuffix(".json") for name in event_schema_texts())
    return sorted({name.rsplit(".v", 1)[0] for name in names if name != ENVELOPE_NAME})


def event_schema(file_name: str) -> dict[str, Any] | None:
    text = event_schema_texts().get(file_name)
    return None if text is None else json.loads(text)
