"""The event contract (outbox/event_contract.py): the AsyncAPI document is valid AsyncAPI
3.0.0, every registered schema is valid and lists its own example, the document and the
schemas name each other exactly, the schemas' enums are the models' values, the service
serves them all and `export_event_contract` writes them, the producers' events follow them,
and the checker that every stream read goes through (tests/event_contract.py) can fail.

asyncapi-3.0.0.schema.json is AsyncAPI's own JSON Schema of the 3.0.0 document, copied
unchanged from `schemas/3.0.0-without-$id.json` of the npm package @asyncapi/specs 6.11.1
(Apache-2.0): the test needs no network and no Node.js.
"""

from __future__ import annotations

import copy
import io
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import Client
from jsonschema import Draft7Validator

from orders.models import CancelReason, OrderStatus
from orders.services import order_cancel
from outbox.event_contract import (
    ENVELOPE_FILE,
    asyncapi_document,
    event_schema,
    event_schema_texts,
    event_type_and_version,
)
from outbox.relay import relay_until_idle
from tests.event_contract import assert_follows_contract
from tests.outbox.helpers import stream_entries
from tests.payments.helpers import WEBHOOK_SECRET, webhook_event
from tests.payments.test_webhooks import place_pending_order, send

ASYNCAPI_SCHEMA = json.loads((Path(__file__).parent / "asyncapi-3.0.0.schema.json").read_text())
ASYNCAPI_FILE = Path(settings.EVENT_CONTRACT_DOCUMENT)
ENVELOPE = ENVELOPE_FILE.name
EVENT_SCHEMA_FILES = sorted(name for name in event_schema_texts() if name != ENVELOPE)
MESSAGES = asyncapi_document()["components"]["messages"]


def _bundled(document: dict[str, Any]) -> dict[str, Any]:
    """The document with each message's schema file in place of its `$ref`, so that
    AsyncAPI's schema checks the schemas too (it cannot follow a reference to a file)."""
    document = copy.deepcopy(document)
    for message in document["components"]["messages"].values():
        schema = message["payload"]["schema"]
        message["payload"]["schema"] = event_schema(Path(schema["$ref"]).name)
    return document


def _errors(validator: Draft7Validator, instance: Any) -> list[str]:
    """Every error, those under a oneOf/anyOf branch included (AsyncAPI's schema nests
    most of its checks in such branches)."""
    found, pending = [], list(validator.iter_errors(instance))
    while pending:
        error = pending.pop()
        found.append(f"{'/'.join(map(str, error.absolute_path))}: {error.message}")
        pending.extend(error.context or ())
    return found


# --- the files ------------------------------------------------------------------------------


def test_the_asyncapi_document_is_valid_asyncapi_3_0_0():
    validator = Draft7Validator(ASYNCAPI_SCHEMA)
    document = yaml.safe_load(ASYNCAPI_FILE.read_text())
    assert document["asyncapi"] == "3.0.0"
    assert _errors(validator, document) == []
    assert _errors(validator, _bundled(document)) == []


def test_asyncapi_schema_catches_a_broken_document():
    validator = Draft7Validator(ASYNCAPI_SCHEMA)
    broken = _bundled(asyncapi_document())
    broken["operations"]["publishOrderEvents"]["action"] = "publish"  # AsyncAPI 2's word
    message = next(iter(broken["components"]["messages"].values()))
    message["payload"]["schema"]["required"] = "id"  # not an array
    errors = _errors(validator, broken)
    assert any("publish" in error for error in errors), errors
    assert any("'id' is not of type 'array'" in error for error in errors), errors


@pytest.mark.parametrize("file_name", sorted(event_schema_texts()))
def test_each_schema_is_valid_draft_07_and_its_examples_follow_it(file_name):
    schema = event_schema(file_name)
    Draft7Validator.check_schema(schema)
    if file_name == ENVELOPE:
        return  # definitions only
    assert schema["examples"], "every event schema shows an example entry"
    for example in schema["examples"]:
        fields = example | {"payload": json.dumps(example["payload"])}
        assert_follows_contract(fields, where=f"the example of {file_name}")


def test_the_document_and_the_schema_files_name_each_other_exactly():
    referenced = {Path(m["payload"]["schema"]["$ref"]).name: m for m in MESSAGES.values()}
    assert sorted(referenced) == EVENT_SCHEMA_FILES
    channel_messages = asyncapi_document()["channels"]["ordersEvents"]["messages"]
    assert sorted(channel_messages) == sorted(MESSAGES)
    for file_name, message in referenced.items():
        schema = event_schema(file_name)
        event_type, version = event_type_and_version(file_name)
        assert message["name"] == schema["properties"]["type"]["const"] == event_type
        assert schema["properties"]["schema_version"]["const"] == version
        assert f"`schema_version` {version}" in message["summary"]


def test_every_event_type_the_spec_names_has_a_schema():
    types = {event_type_and_version(name)[0] for name in EVENT_SCHEMA_FILES}
    assert types == {
        "order.created",
        "order.paid",
        "order.cancelled",
        "order.refunded",
        "payment.refunded",
    }


def test_each_app_publishes_the_schemas_of_the_events_it_emits():
    # outbox knows no domain event: it brings the envelope only
    assert sorted(path.name for path in ENVELOPE_FILE.parent.glob("*.json")) == [ENVELOPE]
    orders_types = {
        event_type_and_version(path.name)[0]
        for path in (Path(settings.BASE_DIR) / "orders" / "event_schemas").glob("*.json")
    }
    payments_types = {
        event_type_and_version(path.name)[0]
        for path in (Path(settings.BASE_DIR) / "payments" / "event_schemas").glob("*.json")
    }
    assert orders_types == {"order.created", "order.paid", "order.cancelled", "order.refunded"}
    assert payments_types == {"payment.refunded"}


def test_the_schemas_enums_are_the_models_values():
    # a new status or cancel reason in the code must reach the published schemas
    for file_name in EVENT_SCHEMA_FILES:
        payload = event_schema(file_name)["properties"]["payload"]["properties"]
        if "status" in payload:
            assert payload["status"]["const"] in OrderStatus.values, file_name
        if "reason" in payload:
            assert payload["reason"]["enum"] == list(CancelReason.values), file_name
    created = event_schema("order.created.v1.json")["properties"]["payload"]["properties"]
    assert created["status"]["const"] == OrderStatus.PENDING_PAYMENT
    for version in (1, 2):
        paid = event_schema(f"order.paid.v{version}.json")["properties"]["payload"]
        assert paid["properties"]["status"]["const"] == OrderStatus.PAID


def test_export_writes_the_contract_as_files_side_by_side(tmp_path):
    call_command("export_event_contract", str(tmp_path / "contract"), stdout=io.StringIO())
    written = tmp_path / "contract"
    assert (written / "asyncapi.yaml").read_bytes() == ASYNCAPI_FILE.read_bytes()
    assert sorted(path.name for path in (written / "schemas").iterdir()) == sorted(
        event_schema_texts()
    )
    # every $ref of the document names a file written beside it
    for message in MESSAGES.values():
        assert (written / message["payload"]["schema"]["$ref"]).is_file()


# --- served by the service ------------------------------------------------------------------


def test_the_service_serves_the_document_and_every_schema_it_refers_to():
    client = Client()
    served = client.get("/api/events/")
    assert served.status_code == 200
    assert served["Content-Type"] == "application/json"
    assert "max-age" in served["Cache-Control"]
    assert served.json() == yaml.safe_load(ASYNCAPI_FILE.read_text())

    as_yaml = client.get("/api/events/asyncapi.yaml")
    assert as_yaml.status_code == 200
    assert as_yaml.content == ASYNCAPI_FILE.read_bytes()

    # each relative $ref resolves, against the document's URL, to the file's bytes
    for message in served.json()["components"]["messages"].values():
        url = urljoin("/api/events/", message["payload"]["schema"]["$ref"])
        schema = client.get(url)
        assert schema.status_code == 200, url
        assert schema["Content-Type"] == "application/schema+json"
        assert schema.content == event_schema_texts()[Path(url).name]
    assert client.get(f"/api/events/schemas/{ENVELOPE}").status_code == 200


@pytest.mark.parametrize(
    "path", ["/api/events/schemas/order.shipped.v1.json", "/api/events/schemas/..%2Fmodels.py"]
)
def test_an_unknown_schema_is_a_404_problem(path):
    response = Client().get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"


def test_the_contract_is_read_only():
    response = Client().post("/api/events/", data="{}", content_type="application/json")
    assert response.status_code == 405


# --- the checker the stream reads go through can fail ----------------------------------------


def _example_fields(file_name: str) -> dict[str, str]:
    example = event_schema(file_name)["examples"][0]
    return example | {"payload": json.dumps(example["payload"])}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f["payload"].update(email="ada@example.com"), "email"),  # v2 dropped it
        (lambda f: f["payload"].pop("total"), "'total' is a required property"),
        (lambda f: f["payload"].update(total=39.98), "is not of type 'string'"),
        (lambda f: f.update(version="0"), "does not match"),
        # a v2 payload labelled 1 (or unlabelled, which means 1) is held to version 1
        (lambda f: f.update(schema_version="1"), "v1.json at payload: 'email' is a required"),
        (lambda f: f.pop("schema_version"), "v1.json at payload: 'email' is a required"),
        (lambda f: f.update(occurred_at="2026-11-30 15:05:10"), "does not match|date-time"),
        (lambda f: f.update(extra="x"), "Additional properties"),
    ],
    ids=[
        "v2-email",
        "missing",
        "float",
        "version-0",
        "labelled-1",
        "unlabelled",
        "time",
        "extra",
    ],
)
def test_the_checker_rejects_an_entry_that_breaks_its_schema(change, message):
    example = event_schema("order.paid.v2.json")["examples"][0]
    fields = copy.deepcopy(example)
    change(fields)
    with pytest.raises(AssertionError, match=message):
        assert_follows_contract(fields | {"payload": json.dumps(fields["payload"])})


def test_an_entry_without_schema_version_is_held_to_version_1():
    v1 = _example_fields("order.paid.v1.json")
    del v1["schema_version"]
    assert_follows_contract(v1)  # published before the field existed: follows version 1
    v2_payload = _example_fields("order.paid.v2.json")["payload"]
    with pytest.raises(AssertionError, match="'email' is a required property"):
        assert_follows_contract(v1 | {"payload": v2_payload})


def test_the_checker_rejects_a_type_the_contract_does_not_describe():
    fields = _example_fields("order.paid.v2.json") | {"type": "order.shipped"}
    with pytest.raises(AssertionError, match=r"does not describe: type 'order\.shipped'"):
        assert_follows_contract(fields)
    with pytest.raises(AssertionError, match="does not describe"):
        assert_follows_contract(_example_fields("order.paid.v2.json") | {"schema_version": "3"})


# --- the producers ----------------------------------------------------------------------------


@pytest.fixture
def own_stream(settings):
    """A stream of this test's own, inside this run's names (so the session's sweep sees it)."""
    settings.EVENT_STREAM = f"{settings.EVENT_STREAM}:contract-{uuid.uuid4().hex[:8]}"
    settings.PAYMENT_WEBHOOK_SECRETS = [WEBHOOK_SECRET]
    return settings.EVENT_STREAM


@pytest.mark.django_db(transaction=True)
def test_every_event_type_the_code_publishes_follows_its_latest_schema(own_stream):
    # given an order paid then refunded, and one cancelled by its customer
    refunded = place_pending_order()
    for event_type in ("payment.succeeded", "refund.succeeded"):
        response = send(
            webhook_event(event_type, order=refunded.order, payment_id=refunded.payment_id)
        )
        assert response.status_code == 200, response.content
    cancelled = place_pending_order()
    order_cancel(order_id=cancelled.order.pk, reason=CancelReason.CUSTOMER_REQUESTED)

    # when the relay publishes their events
    relay_until_idle(time_budget=30)

    # then each follows the newest schema of its type (stream_entries checks every entry)
    entries = stream_entries(stream=own_stream)
    assert sorted((e["type"], e["schema_version"]) for e in entries) == sorted(
        [
            ("order.created", "1"),
            ("order.created", "1"),
            ("order.paid", "2"),
            ("order.refunded", "2"),
            ("payment.refunded", "1"),
            ("order.cancelled", "2"),
        ]
    )
    # and the customer's email travels in order.created only
    with_email = {e["type"] for e in entries if "email" in json.loads(e["payload"])}
    assert with_email == {"order.created"}


@pytest.mark.django_db(transaction=True)
def test_a_row_written_before_schema_versions_is_published_as_version_1(own_stream):
    # given an order.paid row as the code before schema versions wrote it: email included,
    # no schema_version column in its INSERT
    placed = place_pending_order()
    payload = {
        "order_id": str(placed.order.pk),
        "client_id": str(placed.order.client_id),
        "email": placed.order.email,
        "status": "paid",
        "total": str(placed.order.total),
        "currency": placed.order.currency,
        "paid_at": "2026-11-30T15:05:10+00:00",
    }
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO outbox_outboxevent (id, type, aggregate_type, aggregate_id, version,
                occurred_at, correlation_id, payload, status, attempts, next_attempt_at,
                last_error, created_at)
            VALUES (%s, 'order.paid', 'order', %s, 2, now(), '', %s::jsonb, 'pending', 0,
                now(), '', now())
            """,
            [str(uuid.uuid4()), str(placed.order.pk), json.dumps(payload)],
        )

    # when the relay publishes it
    relay_until_idle(time_budget=30)

    # then the stream says version 1, which that payload follows (stream_entries checks it)
    paid = [e for e in stream_entries(stream=own_stream) if e["type"] == "order.paid"]
    assert [e["schema_version"] for e in paid] == ["1"]
    assert json.loads(paid[0]["payload"])["email"] == placed.order.email
