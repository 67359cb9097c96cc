"""A TCP relay in front of a real Redis that a test can hang, cut, or make hold one request
in flight, to see what a client does when its connection goes quiet or away, or when it is
paused while its request is on the wire.

    relay = RedisRelay.to(settings.REDIS_URL)   # clients connect to relay.url instead
    relay.freeze()   # the connections open now stop passing bytes (sockets stay open);
                     # connections made later pass bytes as usual
    relay.cut()      # every connection is closed; new ones are closed as they arrive
    relay.restore()  # new connections pass bytes again

    relay.hold_on(b"EVALSHA", on_hold=worker.pause)
                     # the first client chunk containing the marker, and everything after it
                     # on that connection, are held; on_hold runs then, and `held` is set
    relay.release()  # what was held goes to Redis (and nothing more is held); `replied` is
                     # set once Redis's answer to it has been passed back to the client
    relay.close()
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class _Pair:
    client: socket.socket
    server: socket.socket
    flowing: threading.Event = field(default_factory=threading.Event)
    # The client's chunks held since the marker, or None while this connection is not held.
    held: list[bytes] | None = None
    # Released: what the server sends from now on answers the request that was held.
    answering: bool = False

    def close(self) -> None:
        self.flowing.set()  # a pump held by freeze() wakes up and finds the sockets closed
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class RedisRelay:
    def __init__(self, host: str, port: int, db: int) -> None:
        self.target = (host, port)
        self.db = db
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held = threading.Event()
        self.replied = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._accepting = True
        self._closed = False
        self._marker: bytes | None = None
        self._on_hold: Callable[[], None] | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    @classmethod
    def to(cls, redis_url: str) -> RedisRelay:
        parts = urlsplit(redis_url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 6379, int(parts.path[1:] or 0))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self.db}"

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def freeze(self) -> None:
        with self._lock:
            for pair in self._pairs:
                pair.flowing.clear()

    def cut(self) -> None:
        with self._lock:
            self._accepting = False
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.close()

    def restore(self) -> None:
        with self._lock:
            self._accepting = True

    def hold_on(self, marker: bytes, on_hold: Callable[[], None] | None = None) -> None:
        with self._lock:
            self._marker, self._on_hold = marker, on_hold

    def release(self) -> None:
        with self._lock:
            self._marker = None
            for pair in self._pairs:
                if pair.held is None:
                    continue
                chunks, pair.held = pair.held, None
                pair.answering = True
                # Under the lock: the client's later chunks wait for these, keeping the order.
                try:
                    for chunk in chunks:
                        pair.server.sendall(chunk)
                except OSError:
                    # The connection went away while held (the client timed out and its
                    # pumps closed the sockets): nothing is left to answer, and the test
                    # must not fail on that instead of on what it checks.
                    pair.close()

    def close(self) -> None:
        self._closed = True
        self.cut()
        with contextlib.suppress(OSError):
            self.listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                accepting = self._accepting
            if not accepting:
                client.close()
                continue
            pair = _Pair(client, socket.create_connection(self.target))
            pair.flowing.set()
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, False), daemon=True).start()

    def _pump(self, pair: _Pair, upstream: bool) -> None:
        source, sink = (pair.client, pair.server) if upstream else (pair.server, pair.client)
        while True:
            try:
                chunk = source.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                pair.close()
                return
            if upstream and self._held_back(pair, chunk):
                continue
            pair.flowing.wait()  # frozen: held here, the socket left open
            try:
                sink.sendall(chunk)
            except OSError:
                pair.close()
                return
            if not upstream and pair.answering:
                self.replied.set()

    def _held_back(self, pair: _Pair, chunk: bytes) -> bool:
        """Keep the client's chunk back if its connection is held or the chunk starts a hold."""
        with self._lock:
            if pair.held is not None:
                pair.held.append(chunk)
                return True
            if self._marker is None or self._marker not in chunk:
                return False
            pair.held, self._marker = [chunk], None
            on_hold = self._on_hold
        if on_hold:
            on_hold()
        self.held.set()
        return True
