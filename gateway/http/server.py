"""How uvicorn runs the app: our guarded protocol, our limits, our logging (for `serve` and
the tests alike, so what is tested is what runs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import uvicorn

from gateway.http.protocol import guarded_protocol
from gateway.settings import Settings


def uvicorn_config(
    app: Any,
    settings: Settings,
    *,
    access_log: bool = False,
    on_refused: Callable[[str], None] | None = None,
) -> uvicorn.Config:
    """`on_refused(reason)`: a connection was refused or evicted (for a metric)."""
    server = settings.server
    return uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        http=guarded_protocol(
            server, trusted_proxies=settings.network.trusted_proxies, on_refused=on_refused
        ),
        timeout_keep_alive=int(max(1, server.keep_alive_seconds)),
        log_config=None,
        access_log=access_log,
        server_header=False,
        proxy_headers=False,  # the gateway decides itself which proxies to trust
        lifespan="on",
        # a console's live stream never ends by itself: on stop, requests still running
        # after this long are cancelled (a beacon takes milliseconds)
        timeout_graceful_shutdown=5,
    )
