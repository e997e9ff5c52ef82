"""Routes served before routing: one exact path straight to its ASGI endpoint.

A source marks its hot path (the beacon: every page view of every visitor) with a
`DirectRoute`; the app puts a `FastPath` in front of the router for it, so a request to
that path skips route matching and exception wrapping (the endpoint renders its own errors).
"""

from __future__ import annotations

from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class DirectRoute(Route):
    """A route whose endpoint is an ASGI app answering every method and its own errors."""

    def __init__(self, path: str, endpoint: ASGIApp) -> None:
        super().__init__(path, endpoint)  # not a function: Starlette serves it as ASGI


class FastPath:
    """Sends one path straight to its endpoint, past routing and exception wrapping."""

    def __init__(self, app: ASGIApp, *, path: str, endpoint: ASGIApp) -> None:
        self._app = app
        self._path = path
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self._path:
            await self._endpoint(scope, receive, send)
        else:
            await self._app(scope, receive, send)
