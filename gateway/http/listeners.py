"""The gateway's two listeners: the public one (beacon, snippet, APIs) and the metrics one.

`/metrics` is served where the operator binds it (`[metrics] host/port`, loopback by
default), and on the public port only to a configured bearer token, never by the peer's
address. Both listeners belong to one uvicorn server (one event loop, one guarded protocol);
a request knows its listener by its local port (`scope["server"]`), and the metrics listener
serves only what a scraper or an orchestrator's probes need. Why: docs/design/metrics.md.
"""

from __future__ import annotations

import socket
from typing import Any

import orjson

from gateway.settings import Settings

METRICS_LISTENER_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
_NOT_HERE = orjson.dumps({"error": "not_found", "message": "not served on this listener"})


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket, as uvicorn would open it (IPv6 when the host is one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    return sock


def listening_sockets(settings: Settings) -> list[socket.socket]:
    """The public listener, and the metrics listener unless `[metrics] port = 0`."""
    sockets = [bind(settings.server.host, settings.server.port)]
    if settings.metrics.port:
        try:
            sockets.append(bind(settings.metrics.host, settings.metrics.port))
        except OSError:
            sockets[0].close()
            raise
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
