"""The gateway's two listeners: the public one (beacon, snippet, APIs) and the metrics one.

`/metrics` is served where the operator binds it (`[metrics] host/port`, loopback by
default), and on the public port only to a configured bearer token, never by the peer's
address. Both listeners belong to one uvicorn server (one event loop, one guarded protocol);
a request knows its listener by its local port (`scope["server"]`), and the metrics listener
serves only what a scraper or an orchestrator's probes need. Why: docs/design/metrics.md.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.settings import Settings

METRICS_LISTENER_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
_NOT_HERE = orjson.dumps({"error": "not_found", "message": "not served on this listener"})


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket, as uvicorn would open it (IPv6 when the host is one). Its
    proto is named: asyncio turns Nagle's algorithm off only on sockets that say TCP, and
    with it on, an answer's body waits for the client's delayed ACK of its headers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    return sock


@dataclass(frozen=True, slots=True)
class Listener:
    """One address the gateway listens on, and what sets it (for errors an operator can act on)."""

    name: str
    host: str
    port: int
    setting: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class CannotListen(Exception):
    """A listener could not bind: the one line names it, its address and what moves it."""

    def __init__(self, listener: Listener, reason: str) -> None:
        super().__init__(
            f"cannot listen on {listener.host}:{listener.port} (the {listener.name} listener; "
            f"{listener.setting} moves it): {reason}"
        )


def listeners(settings: Settings) -> list[Listener]:
    """The public listener, and the metrics listener unless `[metrics] port = 0`."""
    found = [
        Listener("public", settings.server.host, settings.server.port, "[server] port, --port")
    ]
    if settings.metrics.port:
        metrics = settings.metrics
        found.append(
            Listener("metrics", metrics.host, metrics.port, "[metrics] port, --metrics-port")
        )
    return found


def listening_sockets(settings: Settings) -> list[socket.socket]:
    """A bound socket per listener (raises CannotListen, having closed what it bound)."""
    sockets: list[socket.socket] = []
    for listener in listeners(settings):
        try:
            sockets.append(bind(listener.host, listener.port))
        except OSError as exc:
            for sock in sockets:
                sock.close()
            raise CannotListen(listener, exc.strerror or str(exc)) from None
    return sockets


def on_metrics_listener(scope: Any, metrics_port: int) -> bool:
    server = scope.get("server")
    return bool(metrics_port) and server is not None and server[1] == metrics_port


class MetricsListenerGate:
    """ASGI middleware: on the metrics listener, only the scraper's and the probes' paths."""

    def __init__(self, app: Any, *, metrics_port: int) -> None:
        self._app = app
        self._port = metrics_port

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and on_metrics_listener(scope, self._port)
            and scope["path"] not in METRICS_LISTENER_PATHS
        ):
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": _NOT_HERE})
            return
        await self._app(scope, receive, send)
