"""Routes served before the middleware and the router: one exact path straight to its app.

A source marks its hot path (the beacon: every page view of every visitor) with a
`DirectRoute`; the app (`FastPathApp`) answers a request for that path by calling the
endpoint at once, before Starlette's error middleware, the listener gate and routing, so
the hottest request pays for none of them (the endpoint renders its own errors). On the
metrics listener such a path is left to the listener gate, which refuses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.http.listeners import on_metrics_listener


class DirectRoute(Route):
    """A route whose endpoint is an ASGI app answering every method and its own errors."""

    def __init__(self, path: str, endpoint: ASGIApp) -> None:
        super().__init__(path, endpoint)  # not a function: Starlette serves it as ASGI


class FastPathApp(Starlette):
    """Starlette, with each direct route's path sent straight to its endpoint."""

    def __init__(self, *, direct: Mapping[str, ASGIApp], metrics_port: int, **options: Any) -> None:
        """`direct`: path → endpoint; `metrics_port`: the metrics listener (0: none), where
        these paths are not served."""
        super().__init__(**options)
        self._direct = dict(direct)
        self._metrics_port = metrics_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self._direct.get(scope["path"])
            if endpoint is not None and not on_metrics_listener(scope, self._metrics_port):
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
