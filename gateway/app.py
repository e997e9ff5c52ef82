"""The Starlette application factory: routes, error handlers and the lifespan.

Everything the gateway runs is built here from one `Settings` and owned by the lifespan,
which starts background work and stops it again; there are no module-level singletons.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.config import Settings
from gateway.errors import EventError
from gateway.tiktok import EventsApiClient

log = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: configuration loaded and every component started."""
    if not getattr(request.app.state, "ready", False):
        return JSONResponse({"status": "starting"}, status_code=503)
    return JSONResponse({"status": "ready", "pixels": len(request.app.state.settings.pixels)})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _event_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EventError)
    return JSONResponse(exc.to_json(), status_code=exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return JSONResponse({"error": "internal error"}, status_code=500)


def create_app(settings: Settings, *, api_client: EventsApiClient | None = None) -> Starlette:
    """Wire the gateway for `settings`; `api_client` may be injected (tests, benchmarks)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = api_client or EventsApiClient(
            settings.api_base, timeout=settings.api_timeout_seconds
        )
        app.state.api_client = client
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            if api_client is None:
                await client.aclose()

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
        ],
        exception_handlers={
            HTTPException: _http_error,
            EventError: _event_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.ready = False
    return app
