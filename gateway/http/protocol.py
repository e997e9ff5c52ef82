"""The HTTP connection, guarded: slow, oversized and excess clients are refused at once.

uvicorn's httptools protocol, subclassed, adds per connection a deadline for each request's
headers (`header_timeout_seconds`: 408, closed), a deadline between pieces of a body
(`body_timeout_seconds`: closed, nothing stored), a limit on the raw header bytes
(`max_header_bytes`: 431, closed) and a bound on open connections (`max_connections`: 503).
Refusals are JSON. A subclass keeps uvicorn's speed and everything else it does.
Why, and why a class plus a factory: docs/design/guarded-protocol.md.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.settings import ServerSettings

log = logging.getLogger(__name__)
_END_OF_HEADERS = b"\r\n\r\n"
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Busy"}


def _refusal(status: int, error: str, message: str) -> bytes:
    body = orjson.dumps({"error": error, "message": message})
    head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
    return head + (
        b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % len(body)
        + body
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with deadlines and size limits; `guarded_protocol` sets them."""

    _header_timeout: ClassVar[float]
    _body_timeout: ClassVar[float]
    _max_header_bytes: ClassVar[int]
    _max_connections: ClassVar[int]
    _sweep_every: ClassVar[float]
    _sweeps: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, object]]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_headers = True
        self._header_bytes = 0
        self._tail = b""
        self._deadline = 0.0  # loop time after which the connection is refused; 0: none
        self._on_deadline = self._headers_too_slow
        if len(self.connections) > self._max_connections:
            self._refuse(503, "busy", "too many connections; retry shortly")
            return
        self._arm(self._header_timeout, self._headers_too_slow)
        self._schedule_sweep()

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = 0.0
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers and not self._headers_fit(data):
            self._refuse(431, "headers_too_large", "request headers over the limit")
            return
        super().data_received(data)

    def _headers_fit(self, data: bytes) -> bool:
        """Whether the headers end within the limit (the body may follow in `data`)."""
        room = self._max_header_bytes - self._header_bytes
        if len(data) <= room:
            self._header_bytes += len(data)
            self._tail = data[-3:] if len(data) >= 3 else (self._tail + data)[-3:]
            return True
        window = self._tail + data[: room + len(_END_OF_HEADERS)]
        return _END_OF_HEADERS in window

    # parser callbacks (called by uvicorn's data_received)
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_headers:  # the next request on a kept-alive connection
            self._in_headers, self._header_bytes, self._tail = True, 0, b""
        self._arm(self._header_timeout, self._headers_too_slow)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._arm(self._body_timeout, self._body_too_slow)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._deadline = self.loop.time() + self._body_timeout
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._deadline = 0.0
        super().on_message_complete()
        self._in_headers, self._header_bytes, self._tail = True, 0, b""

    # deadlines
    def _arm(self, seconds: float, then: Callable[[], None]) -> None:
        self._deadline = self.loop.time() + seconds
        self._on_deadline = then

    def _schedule_sweep(self) -> None:
        """One sweep per loop at a time, while connections are open (a timer, not a task:
        a loop may close with it pending, and nothing is left behind)."""
        if self.loop not in self._sweeps:
            self._sweeps[self.loop] = self.loop.call_later(self._sweep_every, self._sweep)

    def _sweep(self) -> None:
        """Refuse the connections whose deadline passed."""
        self._sweeps.pop(self.loop, None)
        now, guarded = self.loop.time(), type(self)
        for connection in list(self.connections):
            if isinstance(connection, guarded) and 0.0 < connection._deadline < now:
                connection._deadline = 0.0
                connection._on_deadline()
        if self.connections:
            self._schedule_sweep()

    def _headers_too_slow(self) -> None:
        self._refuse(408, "timeout", "request headers not received in time")

    def _body_too_slow(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()  # the endpoint sees the client leave: nothing stored

    def _refuse(self, status: int, error: str, message: str) -> None:
        self._deadline = 0.0
        if not self.transport.is_closing():
            self.transport.write(_refusal(status, error, message))
            self.transport.close()


def guarded_protocol(limits: ServerSettings) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with `limits` (pass it as uvicorn's `http=`).

    Deadlines are timestamps checked by one sweep per event loop a few times a second, not a
    timer per request: two `call_later`s per request cost the beacon a measurable share.
    Each call makes its own subclass, so two servers on one loop keep their own sweeps.
    """
    shortest = min(limits.header_timeout_seconds, limits.body_timeout_seconds)

    class Guarded(GuardedHttpToolsProtocol):
        _header_timeout = limits.header_timeout_seconds
        _body_timeout = limits.body_timeout_seconds
        _max_header_bytes = limits.max_header_bytes
        _max_connections = limits.max_connections
        _sweep_every = min(1.0, max(0.05, shortest / 4))
        _sweeps: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, object]] = (
            weakref.WeakKeyDictionary()
        )

    return Guarded
