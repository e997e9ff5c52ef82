"""The Starlette application factory: the routes of every source, error handling, lifespan.

`create_app(gateway)` only arranges HTTP around a `Gateway` built beforehand; the lifespan
starts and stops it. Each source contributes its routes (one line here per source) and
answers errors in its own format behind its own boundary (`http/errors.py`); what reaches
the app's handlers is Starlette's own 404/405 and, as a last resort, a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway import console, health
from gateway.http.errors import GatewayJson, log_unexpected
from gateway.http.listeners import MetricsListenerGate
from gateway.ingest.sources import beacon, relay, server_api
from gateway.ingest.sources.imports import endpoint as imports
from gateway.ingest.sources.postback import endpoint as postback
from gateway.runtime import Gateway


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log_unexpected(exc, f"{request.method} {request.url.path}")
    return GatewayJson().render(exc).response()


def _on_sighup(reload: Callable[[], None]) -> Callable[[], None]:
    """SIGHUP reloads the configuration; returns how to stop listening. Only the main
    thread may handle signals (a gateway run in a thread, as in tests, reloads by call).

    Stopping puts back what SIGHUP did before (`serve` ignores it outside this window),
    not the default action, which would kill a gateway draining its delivery process."""
    loop = asyncio.get_running_loop()
    before = signal.getsignal(signal.SIGHUP)
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (ValueError, RuntimeError, NotImplementedError):
        return lambda: None

    def stop() -> None:
        # one swap, not loop.remove_signal_handler: that sets the default action first
        # (the loop forgets its own handler when it closes, after the gateway has stopped)
        signal.signal(signal.SIGHUP, before if before is not None else signal.SIG_DFL)

    return stop


def create_app(gateway: Gateway) -> Starlette:
    """The HTTP app around `gateway`; the lifespan starts it and stops it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        hangup = _on_sighup(gateway.live.trigger)
        try:
            yield
        finally:
            hangup()
            await gateway.stop()

    browser = beacon.BeaconSource(
        gateway.pipeline, limit=gateway.limits.beacon, guard=gateway.guard, live=gateway.live
    )
    pipeline, limits, failed = gateway.pipeline, gateway.limits, gateway.failed_auth
    app = Starlette(
        routes=[
            *health.routes(gateway),
            *server_api.routes(pipeline, limits.server_api, failed, gateway.leads),
            *postback.routes(gateway.postbacks, gateway.live, limits.postback, failed),
            *relay.routes(pipeline, gateway.leads, gateway.live, limits.server_api, failed),
            *imports.routes(pipeline, limits.server_api, failed, gateway.leads),
            *browser.routes(),
            *console.routes(gateway),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
        middleware=[
            Middleware(MetricsListenerGate, metrics_port=gateway.settings.metrics.port),
            Middleware(beacon.FastPath, path=browser.path, endpoint=browser.endpoint),
        ],
        lifespan=lifespan,
    )
    # `/v1/events/` is a 404 in JSON, not a redirect built from the client's Host header
    app.router.redirect_slashes = False
    return app
