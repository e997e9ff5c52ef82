"""The HTTP connection, guarded: slow, oversized, excess and greedy clients are refused at once.

uvicorn's httptools protocol, subclassed, adds per connection deadlines for each request's
headers (408) and its body (a minimum average rate: closed, nothing stored); limits on raw
header bytes and on a chunked body's trailers and framing (431, closed); at most
`MAX_PIPELINED` queued pipelined requests (reading stops until they are answered); and
open connections bounded in all and per client address (`connection_share.py`: 503).
A refused request is answered after those pipelined before it. Refusals are JSON.
Why, and why a class plus a factory: docs/design/guarded-protocol.md.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Iterable
from typing import ClassVar

import orjson
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.http.connection_share import ConnectionShares, Network
from gateway.settings import ServerSettings
from gateway.settings.descriptors import connection_bound

_END_OF_HEADERS = b"\r\n\r\n"
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Busy"}
MAX_PIPELINED = 8
"""Requests parsed ahead of their answer on one connection; past it reading stops."""
_SLICE = 16_384  # data fed to the parser at a time while requests may be pipelined
_MAX_HELD = 1 << 20  # bytes held unparsed (reading stops well before), or dropped, at most


def _refusal(status: int, error: str, message: str) -> bytes:
    body = orjson.dumps({"error": error, "message": message})
    head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
    return head + (
        b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % len(body)
        + body
    )


class _Trailers(list[tuple[bytes, bytes]]):
    """Where uvicorn appends a chunked body's trailers: nowhere; only their size is kept."""

    size = 0

    def append(self, trailer: tuple[bytes, bytes]) -> None:
        self.size += len(trailer[0]) + len(trailer[1]) + 4


class _GatedFlow(FlowControl):
    """uvicorn's flow control, except that reading stays paused while `held` is set."""

    held = False

    def resume_reading(self) -> None:  # FlowControl's, inlined: it runs for every request
        if self.read_paused and not self.held:
            self.read_paused = False
            self._transport.resume_reading()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with deadlines and size limits; `guarded_protocol` sets them."""

    _header_timeout: ClassVar[float]
    _body_timeout: ClassVar[float]
    _seconds_per_byte: ClassVar[float]
    _max_header_bytes: ClassVar[int]
    _shares: ClassVar[ConnectionShares]
    _sweep_every: ClassVar[float]
    _sweeps: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, object]]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _GatedFlow(transport)
        self._in_headers = True
        self._header_bytes = 0
        self._tail = b""
        self._body_total = 0  # bytes of every body on this connection
        self._body_start = 0  # … when the current request's body began
        self._framing = 0  # bytes since the headers began that are no body: framing, trailers
        self._held = b""  # read, not yet parsed: waits for pipelined requests to be answered
        self._trailers = _Trailers()
        self._refusal: bytes | None = None  # a refused request's answer, due after others'
        self._due = 0  # answers still due before it
        self._dropped = 0  # bytes read and dropped since it was refused
        self._deadline = 0.0  # loop time after which the connection is refused; 0: none
        self._on_deadline = self._headers_too_slow
        address = self.client[0] if self.client else ""
        now = self.loop.time()
        refused = self._shares.admit(self, address, len(self.connections), now)
        if refused is not None:
            self._refuse(503, "busy", "too many connections; retry shortly")
            return
        self._arm(self._header_timeout, self._headers_too_slow)
        self._schedule_sweep()

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = 0.0
        self._held = b""
        self._shares.leave(self)
        super().connection_lost(exc)

    def evict(self) -> None:
        """Make room for another client (`ConnectionShares`): 503 unless answering, closed."""
        self._refuse(503, "busy", "too many connections from your address; retry shortly")

    def data_received(self, data: bytes) -> None:
        if self._held or self.pipeline or len(data) > _SLICE or self._refusal is not None:
            self._data_while_pipelined(data)
        else:
            self._parse(data)  # the usual case: one request, or a piece of a body

    def _data_while_pipelined(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._refusal is not None:
            self._drop(data)
        elif self._held or len(self.pipeline) >= MAX_PIPELINED:
            self._hold(data)  # enough requests wait for an answer: parse this later
        elif not self.pipeline and not self._in_headers:
            self._parse(data)  # the rest of one body: whole
        else:
            self._parse_in_slices(data)

    def _parse_in_slices(self, data: bytes) -> None:
        """Several requests may be in `data`: stop parsing when enough wait for an answer."""
        for start in range(0, len(data), _SLICE):
            if self.transport.is_closing() or self._refusal is not None:
                return  # refused: the rest is dropped
            if len(self.pipeline) >= MAX_PIPELINED:
                self._hold(data[start:])
                return
            self._parse(data[start : start + _SLICE])

    def _parse(self, data: bytes) -> None:
        if self._in_headers and not self._headers_fit(data):
            self._refuse_request(431, "headers_too_large", "request headers over the limit")
            return
        body_before = self._body_total
        super().data_received(data)
        if not self._in_headers:  # in a body: what was not body counts against the limit
            self._framing += len(data) - (self._body_total - body_before)
            body = self._body_total - self._body_start
            if self._framing > self._max_header_bytes + 8 * body:
                message = "chunk framing or trailers over the limit"
                self._refuse_request(431, "trailers_too_large", message)

    def _hold(self, data: bytes) -> None:
        self._held += data
        self.flow.held = True  # type: ignore[attr-defined]
        self.flow.pause_reading()
        if len(self._held) > _MAX_HELD and not self.transport.is_closing():
            self.transport.close()

    def _drop(self, data: bytes) -> None:
        """After a refused request, what follows is read and dropped: closing with bytes
        left unread would reset the connection, and the answers still on their way with it."""
        self._dropped += len(data)
        if self._dropped > _MAX_HELD:
            self.transport.close()  # a client that keeps sending gets no more answers

    def _headers_fit(self, data: bytes) -> bool:
        """Whether the headers end within the limit (the body may follow in `data`)."""
        room = self._max_header_bytes - self._header_bytes
        if len(data) <= room:
            self._header_bytes += len(data)
            self._tail = data[-3:] if len(data) >= 3 else (self._tail + data)[-3:]
            return True
        window = self._tail + data[: room + len(_END_OF_HEADERS)]
        return _END_OF_HEADERS in window

    # parser callbacks (called by uvicorn's data_received; deadlines set inline, not by
    # `_arm`: this runs for every request)
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_headers:  # the next request on a kept-alive connection
            self._in_headers, self._header_bytes, self._tail = True, 0, b""
        self._deadline = self.loop.time() + self._header_timeout
        self._on_deadline = self._headers_too_slow

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._body_start, self._framing = self._body_total, 0
        self._deadline = self.loop.time() + self._body_timeout
        self._on_deadline = self._body_too_slow
        super().on_headers_complete()
        self.headers = self._trailers  # uvicorn's on_header appends trailers there: counted

    def on_body(self, body: bytes) -> None:
        # each piece buys the time it would take at the minimum rate, up to the body timeout
        size = len(body)
        self._body_total += size
        earned = self._deadline + size * self._seconds_per_byte
        latest = self.loop.time() + self._body_timeout
        self._deadline = earned if earned < latest else latest
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._deadline = 0.0
        if self._trailers.size:
            if self._trailers.size > self._max_header_bytes:  # the endpoint sees it leave
                self._refuse_request(431, "trailers_too_large", "trailers over the header limit")
                return
            self._trailers.size = 0
        super().on_message_complete()
        self._in_headers, self._header_bytes, self._tail = True, 0, b""

    def on_response_complete(self) -> None:
        if self._refusal is not None:
            self._answered_before_refusal()
            return
        super().on_response_complete()  # starts the next pipelined request, if any
        if self.pipeline or self._held:
            self._next_pipelined()

    def _next_pipelined(self) -> None:
        if self.transport.is_closing():
            return
        if self._held and len(self.pipeline) < MAX_PIPELINED:
            held, self._held = self._held, b""
            self.flow.held = False  # type: ignore[attr-defined]
            self.data_received(held)
        if (self.pipeline or self._held) and self._refusal is None:
            self.flow.pause_reading()  # read on once those waiting are answered

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
        self._refuse_request(408, "timeout", "request headers not received in time")

    def _body_too_slow(self) -> None:
        self._refuse_request(0, "", "")  # closed: the endpoint sees the client leave

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    # refusals
    def _refuse(self, status: int, error: str, message: str) -> None:
        """Answer `status` and close the connection now; only close when an answer may be
        under way (a request running, or pipelined ones waiting)."""
        self._deadline = 0.0
        if not self.transport.is_closing():
            cycle = self.cycle
            if not (
                self.pipeline
                or self._refusal is not None
                or (cycle is not None and cycle.response_started and not cycle.response_complete)
            ):
                self.transport.write(_refusal(status, error, message))
            self.transport.close()

    def _refuse_request(self, status: int, error: str, message: str) -> None:
        """Refuse the request being read (`status` 0: only close): at once, unless requests
        pipelined before it still wait for their answer; then after them, in its turn."""
        if self._refusal is not None or self.transport.is_closing():
            return
        cycle = self.cycle
        if self._in_headers:  # it has no cycle yet: the last one made is before it
            waiting = cycle is not None and not cycle.response_complete
        else:  # in its body: it is the last cycle made, queued if others wait before it
            waiting = bool(self.pipeline) and self.pipeline[0][0] is cycle
            if waiting:
                self.pipeline.popleft()  # it never gets its turn
        if not waiting:
            if status:
                self._refuse(status, error, message)
            else:
                self._deadline = 0.0
                self._close()
            return
        self._refusal = _refusal(status, error, message) if status else b""
        self._due = 1 + len(self.pipeline)  # the one running, and those waiting
        self._deadline = 0.0  # nothing more is parsed: from here, what arrives is dropped
        self._held = b""
        self.flow.held = False  # type: ignore[attr-defined]
        self.flow.resume_reading()

    def _answered_before_refusal(self) -> None:
        """One of the answers due before the refusal is out: start the next, or refuse."""
        self._due -= 1
        if self._due:
            super().on_response_complete()  # starts the next one before the refused request
            return
        self.pipeline.clear()  # requests read after the refused one: never answered
        super().on_response_complete()
        if self.transport.is_closing():  # the last answer closed the connection itself
            return
        self.transport.write(self._refusal or b"")
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # close our side once the answers are sent; read (and drop) what the client still
        # sends until it closes its side too, for as long as it had to send its headers
        self.transport.write_eof()
        self.flow.resume_reading()
        self._arm(self._header_timeout, self._close)


def guarded_protocol(
    limits: ServerSettings,
    *,
    trusted_proxies: Iterable[Network] = (),
    on_refused: Callable[[str], None] | None = None,
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with `limits` (pass it as uvicorn's `http=`).

    Deadlines are timestamps checked by one sweep per event loop a few times a second, not a
    timer per request: two `call_later`s per request cost the beacon a measurable share.
    Each call makes its own subclass, so two servers on one loop keep their own sweeps and
    shares. `on_refused(reason)` counts refused connections (a metric).
    """
    shortest = min(limits.header_timeout_seconds, limits.body_timeout_seconds)
    max_connections, _ = connection_bound(limits.max_connections)
    shares = ConnectionShares(
        max_connections=max_connections,
        per_client=limits.max_connections_per_client,
        exempt=trusted_proxies,
        on_refused=on_refused,
    )

    class Guarded(GuardedHttpToolsProtocol):
        _header_timeout = limits.header_timeout_seconds
        _body_timeout = limits.body_timeout_seconds
        _seconds_per_byte = 1.0 / limits.min_body_rate
        _max_header_bytes = limits.max_header_bytes
        _shares = shares
        _sweep_every = min(1.0, max(0.05, shortest / 4))
        _sweeps: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, object]] = (
            weakref.WeakKeyDictionary()
        )

    return Guarded
