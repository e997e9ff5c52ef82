"""A TCP proxy in front of the test Redis that a test can take down or make deaf.

`down()` is an outage: every connection is closed and new ones are closed at once (they
are counted, so a test can wait until a client has retried a number of times). `deafen()`
is a failover without a TCP reset: the connections open now stay open but nothing passes
through them any more, while new connections work. `mute()` lets commands through and
drops Redis's answers: a command applied whose client times out. Threads, so that sync
tests (a gateway served in its own thread) and async tests use it alike.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit


class RedisProxy:
    def __init__(self, redis_url: str) -> None:
        parts = urlsplit(redis_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._db = parts.path.lstrip("/") or "0"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0
        """Connections accepted so far, refused ones included."""
        self._lock = threading.Lock()
        self._up = True
        self._generation = 0
        self._open: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._muted = False
        self._spawn(self._accept)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self._db}"

    def down(self) -> None:
        with self._lock:
            self._up = False
            self._close_all()

    def up(self) -> None:
        with self._lock:
            self._up = True

    def deafen(self) -> None:
        """The connections open now pass nothing any more (and stay open)."""
        with self._lock:
            self._generation += 1

    def mute(self, muted: bool = True) -> None:
        """Commands still reach Redis; its answers are dropped (until `mute(False)`)."""
        with self._lock:
            self._muted = muted

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._close_all()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _close_all(self) -> None:
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._open.clear()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                if self._closed or not self._up:
                    client.close()
                    continue
                generation = self._generation
            try:
                server = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open += [client, server]
            self._spawn(self._pump, client, server, generation, False)
            self._spawn(self._pump, server, client, generation, True)

    def _pump(
        self, source: socket.socket, target: socket.socket, generation: int, answers: bool
    ) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    target.shutdown(socket.SHUT_WR)
                return
            if self._generation != generation:  # deaf: swallowed, the connection kept
                continue
            if answers and self._muted:
                continue
            try:
                target.sendall(data)
            except OSError:
                return
