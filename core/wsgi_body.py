"""Request bodies sent with `Transfer-Encoding: chunked`, made readable for Django.

Django reads exactly CONTENT_LENGTH bytes of a body and treats a request without one as
empty. A chunked request has no Content-Length (gunicorn refuses one that has both), so
an order arrived as "email is required" and a signed webhook as a bad signature. gunicorn
de-chunks wsgi.input itself and says so with `wsgi.input_terminated` (read to EOF is safe);
this wrapper reads that de-chunked body, at most MAX_REQUEST_BODY_BYTES + 1 bytes, and hands
Django an in-memory body with its length, as if the client had sent Content-Length.

- Over the limit: the request goes on with the length read so far (limit + 1), so
  ProblemMiddleware answers the usual 413 problem+json before anything reads the body.
- A server that passes the chunk framing through (no `wsgi.input_terminated`, e.g. the
  development server) gets 411 problem+json: guessing at the framing would misread bodies.

Behind the compose nginx this is inert (nginx buffers the body and sends Content-Length);
it matters when clients reach gunicorn directly (`make run`).

`UnreadBodyDrain` reads whatever part of a body the app left unread once the response is
written. Many answers never read the body (401 without an API key, 405, 429); a sync worker
then closed the socket with the body's remaining bytes in its receive buffer, the kernel
answered them with a TCP reset, and nginx, still sending that body, reported 502 instead of
the app's answer (seen under load for a 1 MiB body). Bodies over twice the limit are not
drained: such a client gets the connection closed, as before.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings

from core.problems import PROBLEM_CONTENT_TYPE, problem_body

_READ_STEP = 64 * 1024

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _is_chunked(environ: dict[str, Any]) -> bool:
    codings = environ.get("HTTP_TRANSFER_ENCODING", "")
    return "chunked" in (coding.strip(" \t").lower() for coding in codings.split(","))


def _read_at_most(stream: Any, limit: int) -> bytes:
    """Up to `limit` bytes; fewer only at end of stream."""
    buffer = bytearray()
    while len(buffer) < limit:
        chunk = stream.read(min(_READ_STEP, limit - len(buffer)))
        if not chunk:
            break
        buffer += chunk
    return bytes(buffer)


def _length_required(start_response: Callable[..., Any]) -> list[bytes]:
    body = problem_body(
        status=411,
        code="length_required",
        detail="Send the request body with a Content-Length header.",
    )
    payload = json.dumps(body, separators=(",", ":")).encode()
    start_response(
        "411 Length Required",
        [("Content-Type", PROBLEM_CONTENT_TYPE), ("Content-Length", str(len(payload)))],
    )
    return [payload]


# The most this reads and throws away for one request (an over-limit body announced
# honestly is answered 413 and not read: it is refused, not drained).
_DRAIN_AT_MOST_FACTOR = 2


class _DrainingResponse:
    """The app's response iterable; on close() (after the response is written), the
    request body's unread rest is read and discarded."""

    def __init__(self, response: Iterable[bytes], environ: dict[str, Any]) -> None:
        self._response = response
        self._environ = environ

    def __iter__(self):
        return iter(self._response)

    def close(self) -> None:
        try:
            close = getattr(self._response, "close", None)
            if close is not None:
                close()
        finally:
            _drain(self._environ)


def _announced_length(environ: dict[str, Any]) -> int:
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _drain(environ: dict[str, Any]) -> None:
    if _announced_length(environ) > _DRAIN_AT_MOST_FACTOR * settings.MAX_REQUEST_BODY_BYTES:
        return
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    try:
        while stream.read(_READ_STEP):
            pass
    except (OSError, ValueError):
        pass  # the client went away: nothing left to protect


class UnreadBodyDrain:
    """WSGI wrapper: read the unread rest of a request body after the response (see the
    module docstring)."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):
        if not _announced_length(environ):
            return self.app(environ, start_response)
        return _DrainingResponse(self.app(environ, start_response), environ)


class ChunkedBodyMiddleware:
    """WSGI wrapper: a chunked request body becomes a sized one, or a 411."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):
        if not _is_chunked(environ) or environ.get("CONTENT_LENGTH"):
            return self.app(environ, start_response)
        if not environ.get("wsgi.input_terminated"):
            return _length_required(start_response)
        # One byte over the limit is enough to know the body is too large: the rest is
        # never read into memory.
        body = _read_at_most(environ["wsgi.input"], settings.MAX_REQUEST_BODY_BYTES + 1)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        # What Django now sees is a sized body, no longer a chunked one.
        del environ["HTTP_TRANSFER_ENCODING"]
        return self.app(environ, start_response)
