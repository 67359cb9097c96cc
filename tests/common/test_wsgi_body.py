"""UnreadBodyDrain: what the app leaves unread of a body is read once the response is out,
so gunicorn never closes a socket with request bytes unread (a TCP reset, which nginx
reports as 502; the proxy test shows it end to end)."""

from __future__ import annotations

import io

from django.test import override_settings

from core.wsgi_body import UnreadBodyDrain

LIMIT = 1000


def _refuse_without_reading(environ, start_response):
    start_response("401 Unauthorized", [("Content-Type", "application/problem+json")])
    return [b"{}"]


def _respond(app, body: bytes, *, announced: int | None = None) -> tuple[io.BytesIO, bytes]:
    stream = io.BytesIO(body)
    environ = {
        "wsgi.input": stream,
        "CONTENT_LENGTH": str(len(body) if announced is None else announced),
    }
    response = app(environ, lambda status, headers: None)
    written = b"".join(response)
    response.close()  # what the WSGI server does after writing the response
    return stream, written


@override_settings(MAX_REQUEST_BODY_BYTES=LIMIT)
def test_a_body_the_app_did_not_read_is_read_after_the_response():
    # when the app answers without reading a body within twice the limit
    stream, written = _respond(UnreadBodyDrain(_refuse_without_reading), b"x" * (2 * LIMIT))
    # then its answer is unchanged and the whole body has been read off the stream
    assert written == b"{}"
    assert stream.tell() == 2 * LIMIT


@override_settings(MAX_REQUEST_BODY_BYTES=LIMIT)
def test_a_body_far_over_the_limit_is_not_drained():
    # when the announced body is more than twice the limit
    stream, _ = _respond(UnreadBodyDrain(_refuse_without_reading), b"x" * (2 * LIMIT + 1))
    # then nothing of it is read: such a client gets its connection closed
    assert stream.tell() == 0


@override_settings(MAX_REQUEST_BODY_BYTES=LIMIT)
def test_the_apps_own_close_still_runs():
    closed = []

    class Response(list):
        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [])
        return Response([b"ok"])

    stream, written = _respond(UnreadBodyDrain(app), b"y" * 10)
    assert written == b"ok" and closed == [True] and stream.tell() == 10
