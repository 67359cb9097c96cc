"""A TCP relay in front of the real Redis that a test can hang or cut, to see what a
per-process cache's listener does when its connection goes quiet or away.

    relay = RedisRelay.to(settings.REDIS_URL)
    relay.freeze()   # the connections open now stop passing bytes (sockets stay open);
                     # connections made later pass bytes as usual
    relay.cut()      # every connection is closed; new ones are closed as they arrive
    relay.restore()  # new connections pass bytes again
    relay.close()
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class _Pair:
    client: socket.socket
    server: socket.socket
    flowing: threading.Event = field(default_factory=threading.Event)

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
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._accepting = True
        self._closed = False
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
            pair.flowing.wait()  # frozen: held here, the socket left open
            try:
                sink.sendall(chunk)
            except OSError:
                pair.close()
                return
