"""The request id travels with Celery tasks (SPEC §7): sent in the message headers and
bound while the task runs, so task log lines carry it. (Verified end to end against a
real worker while building this; here the two signal handlers are exercised directly.)"""

from __future__ import annotations

from core.request_id import current_request_id, reset_request_id, set_request_id
from orders_project.celery import _bind_request_id, _send_request_id, _unbind_request_id
from outbox.tasks import relay_outbox


def test_publishing_a_task_inside_a_request_puts_its_id_in_the_headers():
    token = set_request_id("req-abc")
    try:
        headers: dict = {}
        _send_request_id(headers=headers)
    finally:
        reset_request_id(token)
    assert headers["request_id"] == "req-abc"


def test_publishing_outside_a_request_adds_nothing():
    headers: dict = {}
    _send_request_id(headers=headers)
    assert "request_id" not in headers


def test_a_running_task_is_bound_to_the_id_it_was_sent_with():
    relay_outbox.push_request(request_id="req-xyz")
    try:
        _bind_request_id(task=relay_outbox)
        assert current_request_id() == "req-xyz"
        _unbind_request_id(task=relay_outbox)
        assert current_request_id() is None
    finally:
        relay_outbox.pop_request()
