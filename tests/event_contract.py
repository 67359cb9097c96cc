"""Every stream entry the tests see is checked against the event contract (the registered
event schemas, outbox/event_contract.py).

`check_stream_entry` validates one entry, as the stream carries it, against the JSON Schema
its `type` and `schema_version` select; the helpers that read a stream call it on each entry
they return, and `check_streams` sweeps whole Redis servers (this run's names on the shared
Redis when the session ends, each private redis-server before a fixture stops it), so an
event no test looked at is checked too. Entries of the synthetic aggregate type "test" (the
outbox tests' own events, tests/outbox/helpers.enqueue) are held to the envelope only; any
other type the contract does not describe fails.

Each process counts what it checked (each entry once) and leaves the counts in
test-artifacts/event-contract/; the process that prints the terminal summary adds them up.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

import redis
from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from outbox.event_contract import event_schema_file_name, event_schema_texts
from tests.run_artifacts import merged_counts, save_counts

ARTIFACTS_KIND = "event-contract"
SYNTHETIC_AGGREGATE_TYPE = "test"  # tests/outbox/helpers.AGGREGATE_TYPE
_ENVELOPE_ONLY = "envelope.v1.json#/definitions/any_event"
_SYNTHETIC_LABEL = "synthetic test events (envelope only)"

_counts: Counter[str] = Counter()
_checked: set[tuple[str, str]] = set()  # (event id, stream entry id)


@cache
def _registry() -> Registry:
    """Every schema file under its file name: the relative `$ref`s between them resolve."""
    return Registry().with_resources(
        (name, Resource.from_contents(json.loads(text), default_specification=DRAFT7))
        for name, text in event_schema_texts().items()
    )


@cache
def contract_validator(reference: str) -> Draft7Validator:
    """A validator of the schema at `reference` (a file name, or one with a #pointer)."""
    return Draft7Validator(
        {"$ref": reference}, registry=_registry(), format_checker=FormatChecker()
    )


def as_event(fields: Mapping[str, str]) -> dict[str, Any]:
    """A stream entry as the schemas describe it: every field as carried, payload parsed."""
    event: dict[str, Any] = {name: value for name, value in fields.items() if name != "_entry_id"}
    event["payload"] = json.loads(event["payload"])
    return event


def schema_reference_for(fields: Mapping[str, str]) -> str:
    """The schema this entry must follow (an entry without schema_version follows 1)."""
    name = event_schema_file_name(fields.get("type", ""), fields.get("schema_version", "1"))
    if name in event_schema_texts():
        return name
    if fields.get("aggregate_type") == SYNTHETIC_AGGREGATE_TYPE:
        return _ENVELOPE_ONLY
    raise AssertionError(
        f"the stream carries an event the contract does not describe: type "
        f"{fields.get('type')!r}, schema_version {fields.get('schema_version', '1')!r} "
        f"(no registered schema {name})"
    )


def assert_follows_contract(fields: Mapping[str, str], *, where: str = "") -> str:
    """Fail unless the entry follows the schema its type and schema_version select;
    returns that schema's reference."""
    reference = schema_reference_for(fields)
    error = best_match(contract_validator(reference).iter_errors(as_event(fields)))
    if error is not None:
        path = "/".join(str(part) for part in error.absolute_path) or "(the entry)"
        raise AssertionError(
            f"stream entry {fields.get('_entry_id', '')} {where} breaks {reference} at "
            f"{path}: {error.message}\nentry: {dict(fields)}"
        )
    return reference


def check_stream_entry(fields: Mapping[str, str], *, where: str = "") -> None:
    """assert_follows_contract for an entry read from a stream, counted (each entry once,
    however many times it is read)."""
    reference = assert_follows_contract(fields, where=where)
    key = (str(fields.get("id")), str(fields.get("_entry_id")))
    if key not in _checked:
        _checked.add(key)
        _counts[_SYNTHETIC_LABEL if reference == _ENVELOPE_ONLY else reference] += 1


def check_stream_entries(entries: Iterable[Mapping[str, str]], *, where: str) -> None:
    for fields in entries:
        check_stream_entry(fields, where=where)


def check_streams(redis_url: str, *, match: str = "*") -> None:
    """Check every entry of every stream on that Redis whose name matches `match`."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        for stream in client.scan_iter(match=match, count=1000, _type="STREAM"):
            last = "-"
            while batch := client.xrange(stream, last, "+", count=1000):
                check_stream_entries(
                    ({"_entry_id": entry_id, **fields} for entry_id, fields in batch),
                    where=f"{redis_url} {stream}",
                )
                last = "(" + batch[-1][0]
    finally:
        client.close()


def stop_after_checking_streams(server) -> None:
    """Stop a private redis-server of the tests, having checked its streams first."""
    try:
        if server.is_running():
            check_streams(server.url)
    finally:
        server.stop()


def save_this_process_counts() -> None:
    save_counts(ARTIFACTS_KIND, os.environ.get("PYTEST_XDIST_WORKER", "main"), _counts)


def summary_lines() -> list[str]:
    counts = merged_counts(ARTIFACTS_KIND)
    if not counts:
        return []
    contract = sum(n for label, n in counts.items() if label != _SYNTHETIC_LABEL)
    lines = [
        f"{contract} stream entries validated against the event contract "
        f"(the apps' event_schemas), {counts[_SYNTHETIC_LABEL]} synthetic against the envelope"
    ]
    lines += [f"  {label:<40} {n:>6}" for label, n in sorted(counts.items())]
    return lines
