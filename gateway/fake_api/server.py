"""The fake Events API server: real HTTP/1.1 on loopback, scriptable failures, a record.

Built on `h11` over asyncio streams rather than an ASGI framework because a faithful fake
must be able to misbehave below HTTP: drop a connection without answering, or answer late.
It serves `POST /open_api/v1.3/event/track/` like TikTok (token check, body validation,
HTTP 200 with an envelope code), plus a small control API under `/_fake/` so a process that
did not start it (a demo, a gateway under test in another process) can script and inspect it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import h11
import orjson

from gateway.core.events_api_schema import validate_request

TRACK_PATH = "/open_api/v1.3/event/track/"
_BAD_TOKEN = (40105, "Access token is incorrect or has been revoked.")
_NO_SCOPE = (40001, "No permission to operate on this event source with this access token.")


@dataclass
class Fault:
    """A scripted misbehaviour, applied to the next `times` matching requests (None: until cleared).

    `status` answers with that HTTP status; `code` answers HTTP 200 with that envelope code;
    `delay` waits before answering (alone: a slow but correct answer); `drop` closes the
    connection without a word. `pixel` limits the fault to one event_source_id; `event_id`
    to requests carrying that event, as TikTok refuses a whole request for one bad event
    (`{position}` in the message becomes the event's index in `data`).
    """

    status: int | None = None
    code: int | None = None
    message: str | None = None
    delay: float = 0.0
    drop: bool = False
    retry_after: float | None = None
    times: int | None = 1
    pixel: str | None = None
    event_id: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class ReceivedRequest:
    """One request as the fake saw it; the token is recorded only as right or wrong, and by
    the label it was given (`set_token(..., label=)`), never itself."""

    at: float
    token_ok: bool
    body: Any
    http_status: int
    code: int | None
    message: str
    fault: bool = False
    token_label: str | None = None


@dataclass
class _State:
    tokens: dict[str, frozenset[str] | None]
    labels: dict[str, str] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[ReceivedRequest] = field(default_factory=list)
    record_bodies: bool = True
    events_accepted: int = 0
    connections_opened: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeEventsApi:
    """A loopback Events API. Use `start()`/`stop()` (a background thread) or `serve_forever()`."""

    def __init__(
        self,
        tokens: Mapping[str, Iterable[str] | None] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        record_bodies: bool = True,
        validate: bool = True,
    ) -> None:
        """`tokens` maps each valid access token to the pixels it may send for (None: any).

        `validate=False` (load tests only) counts events without checking them, so the fake
        takes as little CPU as possible from the gateway it measures.
        """
        tokens = {"test-token": None} if tokens is None else tokens
        self._state = _State(
            tokens={t: None if p is None else frozenset(p) for t, p in tokens.items()},
            record_bodies=record_bodies,
        )
        self._host = host
        self._port = port
        self._validate = validate
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()

    # --- scripting and inspection (thread-safe) ------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    def add_fault(self, fault: Fault | None = None, **kwargs: Any) -> None:
        with self._state.lock:
            self._state.faults.append(fault or Fault(**kwargs))

    def clear_faults(self) -> None:
        with self._state.lock:
            self._state.faults.clear()

    def set_token(
        self, token: str, pixels: Iterable[str] | None = None, *, label: str | None = None
    ) -> None:
        """Accept `token` (for `pixels`; None: any); requests with it record `label`."""
        with self._state.lock:
            self._state.tokens[token] = None if pixels is None else frozenset(pixels)
            if label is not None:
                self._state.labels[token] = label

    def revoke_token(self, token: str) -> None:
        """Refuse `token` from now on (40105), as TikTok does a revoked one."""
        with self._state.lock:
            self._state.tokens.pop(token, None)

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    def accepted_events(self) -> list[dict[str, Any]]:
        """Every event in every accepted request, each with its request's top-level fields."""
        out: list[dict[str, Any]] = []
        for request in self.requests:
            if request.code == 0 and isinstance(request.body, dict):
                top = {k: v for k, v in request.body.items() if k != "data"}
                out.extend({**top, **event} for event in request.body["data"])
        return out

    @property
    def events_accepted(self) -> int:
        with self._state.lock:
            return self._state.events_accepted

    @property
    def connections_opened(self) -> int:
        with self._state.lock:
            return self._state.connections_opened

    def reset(self) -> None:
        with self._state.lock:
            self._state.requests.clear()
            self._state.faults.clear()
            self._state.events_accepted = 0

    # --- answering ---------------------------------------------------------------------

    def _take_fault(self, pixel: str | None, event_ids: list[Any]) -> Fault | None:
        with self._state.lock:
            for fault in self._state.faults:
                if fault.pixel is not None and fault.pixel != pixel:
                    continue
                if fault.event_id is not None and fault.event_id not in event_ids:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._state.faults.remove(fault)
                return fault
        return None

    def _record(self, request: ReceivedRequest, accepted: int) -> None:
        with self._state.lock:
            if not self._state.record_bodies:
                request.body = None
            self._state.requests.append(request)
            self._state.events_accepted += accepted

    async def _track(
        self, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        pixel = body.get("event_source_id") if isinstance(body, dict) else None
        data = body.get("data") if isinstance(body, dict) else None
        event_ids = (
            [e.get("event_id") for e in data if isinstance(e, dict)]
            if isinstance(data, list)
            else []
        )
        fault = self._take_fault(pixel if isinstance(pixel, str) else None, event_ids)
        token = headers.get("access-token", "")
        with self._state.lock:
            known = token in self._state.tokens
            allowed = self._state.tokens.get(token)
            label = self._state.labels.get(token)
        now = time.time()
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.drop:
                self._record(
                    ReceivedRequest(now, known, body, 0, None, "dropped", True, token_label=label),
                    0,
                )
                return None
            if fault.status is not None:
                extra = {"retry-after": str(int(fault.retry_after))} if fault.retry_after else {}
                self._record(
                    ReceivedRequest(
                        now, known, body, fault.status, None, "", True, token_label=label
                    ),
                    0,
                )
                return fault.status, extra, b'{"message":"injected failure"}'
            if fault.code is not None:
                message = fault.message or f"injected envelope code {fault.code}"
                if fault.event_id is not None:
                    message = message.replace("{position}", str(event_ids.index(fault.event_id)))
                self._record(
                    ReceivedRequest(
                        now, known, body, 200, fault.code, message, True, token_label=label
                    ),
                    0,
                )
                return 200, {}, _envelope(fault.code, message)
        if not known:
            code, message = _BAD_TOKEN
        elif allowed is not None and pixel not in allowed:
            code, message = _NO_SCOPE
        elif self._validate:
            code, message = validate_request(body)
        else:
            code, message = (0, "OK") if isinstance(body, dict) else (40002, "Invalid JSON")
        accepted = len(body["data"]) if code == 0 else 0
        self._record(
            ReceivedRequest(now, known, body, 200, code, message, token_label=label), accepted
        )
        return 200, {}, _envelope(code, message)

    def _control(self, method: str, path: str, raw: bytes) -> tuple[int, bytes]:
        if path == "/_fake/requests" and method == "GET":
            return 200, json.dumps([asdict(r) for r in self.requests]).encode()
        if path == "/_fake/stats" and method == "GET":
            with self._state.lock:
                stats = {
                    "requests": len(self._state.requests),
                    "events_accepted": self._state.events_accepted,
                }
            return 200, json.dumps(stats).encode()
        if path == "/_fake/events" and method == "GET":
            return 200, json.dumps(self.accepted_events()).encode()
        if path in ("/_fake/requests", "/_fake/reset") and method in ("DELETE", "POST"):
            self.reset()
            return 200, b'{"ok":true}'
        if path == "/_fake/faults" and method == "DELETE":
            self.clear_faults()
            return 200, b'{"ok":true}'
        if path == "/_fake/faults" and method == "POST":
            try:
                data = json.loads(raw)
                faults = [Fault.from_json(f) for f in (data if isinstance(data, list) else [data])]
            except (ValueError, TypeError) as exc:
                return 400, json.dumps({"error": str(exc)}).encode()
            for fault in faults:
                self.add_fault(fault)
            return 200, b'{"ok":true}'
        return 404, b'{"error":"not found"}'

    async def _respond(
        self, request: h11.Request, raw: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        method = request.method.decode()
        path = request.target.decode().split("?", 1)[0]
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
        if path == TRACK_PATH:
            if method != "POST":
                return 405, {}, b'{"code":40000,"message":"method not allowed"}'
            return await self._track(headers, raw)
        status, body = self._control(method, path, raw)
        return status, {}, body

    # --- HTTP/1.1 over asyncio ---------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request: h11.Request | None = None
                chunks: list[bytes] = []
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await reader.read(65536))
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        chunks.append(bytes(event.data))
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        break
                if request is None:
                    return
                answer = await self._respond(request, b"".join(chunks))
                if answer is None:
                    writer.transport.abort()
                    return
                status, extra, body = answer
                headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
                headers += list(extra.items())
                writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
                writer.write(conn.send(h11.Data(data=body)) or b"")
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, h11.LocalProtocolError, ConnectionError):
            return
        finally:
            writer.close()

    def _track_task(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._state.lock:
            self._state.connections_opened += 1
        task = asyncio.get_running_loop().create_task(self._connection(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def start_serving(self) -> None:
        self._server = await asyncio.start_server(self._track_task, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def serve_forever(self) -> None:
        await self.start_serving()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    # --- background thread, for tests ----------------------------------------------------

    def start(self) -> FakeEventsApi:
        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self.start_serving())
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self.close())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-events-api", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake Events API did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None
            self._thread = None

    def __enter__(self) -> FakeEventsApi:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _envelope(code: int, message: str) -> bytes:
    return json.dumps(
        {"code": code, "message": message, "request_id": uuid.uuid4().hex, "data": {}}
    ).encode()
