"""The TikTok-compatible relay: existing integrations change only their base URL.

    POST /open_api/v1.3/event/track/                       Events 2.0
    POST /open_api/v1.3/pixel/track/, /pixel/batch/        Events 1.0 web events
    POST /open_api/v1.3/offline/track/, /offline/batch/    offline 1.0 (all also under v1.2)

translate.py reads each body into 2.0 events, endpoint.py authenticates the `Access-Token`
and answers in TikTok's envelope; fixups.py counts what the gateway fixed on the way.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from starlette.routing import BaseRoute, Route

from gateway.http.errors import TikTokEnvelope, rendered
from gateway.ingest.policy import SourcePolicy
from gateway.ingest.source import SourceContext
from gateway.ingest.sources.relay.endpoint import RELAY, Reader, RelayEndpoint
from gateway.ingest.sources.relay.translate import read_v1, read_v2

VERSIONS = ("v1.3", "v1.2")
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
"""Every method reaches the endpoint, which refuses all but POST in TikTok's envelope."""
READERS: dict[str, Reader] = {
    "event/track": read_v2,
    "pixel/track": functools.partial(read_v1, offline=False, batch=False),
    "pixel/batch": functools.partial(read_v1, offline=False, batch=True),
    "offline/track": functools.partial(read_v1, offline=True, batch=False),
    "offline/batch": functools.partial(read_v1, offline=True, batch=True),
}


@dataclass(frozen=True)
class RelaySource:
    name: str = "relay"
    policy: SourcePolicy = RELAY

    def routes(self, context: SourceContext) -> list[BaseRoute]:
        """TikTok's paths (every method: a GET gets TikTok's envelope too, not a 405 page);
        limited per client as the server API is, as it accepts the same API keys."""
        if not context.pipeline.settings.relay.enabled:
            return []
        renderer = TikTokEnvelope()
        gate = context.auth.gate("relay", context.limits.server_api)
        endpoint = RelayEndpoint(
            context.pipeline, context.auth, gate, context.leads, answers=renderer
        )
        guarded = {
            name: rendered(functools.partial(endpoint.handle, read=read), renderer)
            for name, read in READERS.items()
        }
        # the router tries routes in order: the paths clients use (v1.3, with the slash, as
        # TikTok's SDKs send them) first, 2.0 then 1.0; each route passed costs every request
        return [
            Route(f"/open_api/{version}/{name}{slash}", guarded[name], methods=_METHODS)
            for version in VERSIONS
            for slash in ("/", "")
            for name in READERS
        ]


SOURCE = RelaySource()
__all__ = ["READERS", "RELAY", "SOURCE", "VERSIONS"]
