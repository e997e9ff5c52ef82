"""The Starlette application factory: the routes of every source, error handling, lifespan.

`create_app(gateway)` only arranges HTTP around a `Gateway` built beforehand; the lifespan
starts and stops it. Each source (listed once, in `SOURCES`) builds its routes from one
`SourceContext` and answers errors in its own format behind its own boundary
(`http/errors.py`); what reaches the app's handlers is Starlette's own 404/405 and, as a
last resort, a bug.
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
from gateway.http.fast_path import DirectRoute, FastPathApp
from gateway.http.listeners import MetricsListenerGate
from gateway.ingest.source import Source, SourceContext
from gateway.ingest.sources import beacon, imports, postback, relay, server_api
from gateway.runtime import Gateway

SOURCES: tuple[Source, ...] = (
    server_api.SOURCE,
    postback.SOURCE,
    relay.SOURCE,
    imports.SOURCE,
    beacon.SOURCE,
)
"""Every source, in the order the router tries their routes."""


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

    context = SourceContext(
        pipeline=gateway.pipeline,
        live=gateway.live,
        limits=gateway.limits,
        auth=gateway.auth,
        leads=gateway.leads,
        guard=gateway.guard,
        postback_log=gateway.postback_log,
    )
    routes = [route for source in SOURCES for route in source.routes(context)]
    metrics_port = gateway.settings.metrics.port
    app = FastPathApp(
        direct={route.path: route.app for route in routes if isinstance(route, DirectRoute)},
        metrics_port=metrics_port,
        routes=[*health.routes(gateway), *routes, *console.routes(gateway)],
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
        middleware=[Middleware(MetricsListenerGate, metrics_port=metrics_port)],
        lifespan=lifespan,
    )
    # `/v1/events/` is a 404 in JSON, not a redirect built from the client's Host header
    app.router.redirect_slashes = False
    return app
