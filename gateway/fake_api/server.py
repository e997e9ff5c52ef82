"""The fake Events API server: real HTTP/1.1 on loopback, scriptable failures, a record.

Built on `h11` over asyncio streams rather than an ASGI framework because a faithful fake
must be able to misbehave below HTTP: drop a connection without answering, or answer late.
It serves `POST /open_api/v1.3/event/track/` (answered by `answers.py`, as TikTok would), plus
a small control API under `/_fake/` so a process that did not start it (a demo, a gateway
under test in another process) can script and inspect it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

import h11

from gateway.fake_api.answers import Answer, Fault, Ledger, ReceivedRequest, answer_track

TRACK_PATH = "/open_api/v1.3/event/track/"


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
        self._state = Ledger(
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

    # --- the control API and routing ----------------------------------------------------

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

    async def _respond(self, request: h11.Request, raw: bytes) -> Answer | None:
        method = request.method.decode()
        path = request.target.decode().split("?", 1)[0]
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
        if path == TRACK_PATH:
            if method != "POST":
                return 405, {}, b'{"code":40000,"message":"method not allowed"}'
            return await answer_track(self._state, headers, raw, validate=self._validate)
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
