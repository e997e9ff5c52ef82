"""The browser source: the snippet (`snippet.py`), the beacon it sends (`endpoint.py`), what
the server observes of the visitor (`enrich.py`, `visitor.py`) and first-party cookies
(`cookies.py`)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.http.rate_limit import RateLimit
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.sources.beacon.cookies import VisitorCookies
from gateway.ingest.sources.beacon.endpoint import BeaconEndpoint
from gateway.ingest.sources.beacon.snippet import SnippetEndpoint
from gateway.settings.live import LiveSettings
from gateway.storage.outbox.guard import BacklogGuard


class BeaconSource:
    """The browser path's endpoints, built once from the pipeline's settings."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        limit: RateLimit,
        guard: BacklogGuard,
        live: LiveSettings | None = None,
    ) -> None:
        """`live`: the beacon takes reloaded pixels and origins from it."""
        settings = pipeline.settings
        self.path = settings.browser.beacon_path
        cookies = VisitorCookies(settings.cookies)
        self.endpoint = BeaconEndpoint(pipeline, cookies, limit=limit, guard=guard)
        if live is not None:
            live.on_reload(self.endpoint.reconfigure)
        self.snippet = SnippetEndpoint(settings)
        self._snippet_path = settings.browser.snippet_path

    def routes(self) -> list[BaseRoute]:
        return [Route(self._snippet_path, self.snippet.handle, methods=["GET", "HEAD"])]


class FastPath:
    """Sends the beacon path straight to its endpoint, past routing and exception wrapping.

    The beacon is the one hot path: every page view of every visitor.
    """

    def __init__(self, app: ASGIApp, *, path: str, endpoint: BeaconEndpoint) -> None:
        self._app = app
        self._path = path
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self._path:
            await self._endpoint(scope, receive, send)
        else:
            await self._app(scope, receive, send)


__all__ = ["BeaconSource", "FastPath"]
