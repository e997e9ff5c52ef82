"""The browser source: the snippet (`snippet.py`), the beacon it sends (`endpoint.py`), what
the server observes of the visitor (`enrich.py`, `visitor.py`) and first-party cookies
(`cookies.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.routing import BaseRoute, Route

from gateway.http.fast_path import DirectRoute
from gateway.ingest.policy import BROWSER, SourcePolicy
from gateway.ingest.source import SourceContext
from gateway.ingest.sources.beacon.cookies import VisitorCookies
from gateway.ingest.sources.beacon.endpoint import BeaconEndpoint
from gateway.ingest.sources.beacon.snippet import SnippetEndpoint


@dataclass(frozen=True)
class BeaconSource:
    """The browser path's endpoints: the snippet, and the beacon served past routing."""

    name: str = "browser"
    policy: SourcePolicy = BROWSER

    def routes(self, context: SourceContext) -> list[BaseRoute]:
        settings = context.pipeline.settings
        cookies = VisitorCookies(settings.cookies)
        limit, guard = context.limits.beacon, context.guard
        endpoint = BeaconEndpoint(context.pipeline, cookies, limit=limit, guard=guard)
        context.live.on_reload(endpoint.reconfigure)  # pixels and their origins
        snippet = SnippetEndpoint(settings)
        browser = settings.browser
        return [
            Route(browser.snippet_path, snippet.handle, methods=["GET", "HEAD"]),
            DirectRoute(browser.beacon_path, endpoint),
        ]


SOURCE = BeaconSource()
__all__ = ["SOURCE", "BeaconSource"]
