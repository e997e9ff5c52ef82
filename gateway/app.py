"""The Starlette application factory: routes, error handlers and the lifespan.

Everything the gateway runs is built here from one `Settings` and owned by the lifespan:
it opens the outbox, starts the dispatcher, and on shutdown stops the dispatcher (grace
period), closes the HTTP client and the outbox, in that order. No module-level singletons.
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
from gateway.dispatch import DeliveryOptions, Dispatcher
from gateway.errors import EventError
from gateway.outbox import Outbox, OutboxUnavailable, open_outbox
from gateway.pipeline import Pipeline
from gateway.server_api import ServerEventsEndpoint
from gateway.tiktok import EventsApiClient

log = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: started, the dispatcher running, and the outbox writable right now."""
    state = request.app.state
    if not getattr(state, "ready", False):
        return JSONResponse({"status": "starting"}, status_code=503)
    if not state.dispatcher.running:
        return JSONResponse({"status": "not ready", "reason": "dispatcher stopped"}, 503)
    try:
        await state.outbox.check_writable()
    except OutboxUnavailable as exc:
        return JSONResponse({"status": "not ready", "reason": str(exc)}, status_code=503)
    return JSONResponse({"status": "ready", "pixels": len(state.settings.pixels)})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _event_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EventError)
    return JSONResponse(exc.to_json(), status_code=exc.status_code)


async def _outbox_unavailable(request: Request, exc: Exception) -> Response:
    return JSONResponse(
        {"error": "unavailable", "message": "events cannot be stored now; retry"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return JSONResponse({"error": "internal error"}, status_code=500)


def create_app(
    settings: Settings,
    *,
    api_client: EventsApiClient | None = None,
    outbox: Outbox | None = None,
) -> Starlette:
    """Wire the gateway for `settings`; the client and outbox may be injected (tests)."""
    store = outbox or open_outbox(settings.outbox)
    tokens = {p.id: p.access_token for p in settings.pixels}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = api_client or EventsApiClient(
            settings.api_base,
            timeout=settings.api_timeout_seconds,
            max_connections=settings.delivery.concurrency,
        )
        await store.open()
        dispatcher = Dispatcher(
            store, client, tokens, options=DeliveryOptions.from_settings(settings)
        )
        pipeline = Pipeline(settings, store, dispatcher)
        app.state.outbox, app.state.dispatcher, app.state.pipeline = store, dispatcher, pipeline
        app.state.server_events = ServerEventsEndpoint(pipeline)
        await dispatcher.start()
        app.state.ready = True
        log.info("gateway ready: %d pixel(s), outbox %r", len(settings.pixels), store)
        try:
            yield
        finally:
            app.state.ready = False
            await dispatcher.stop()
            if api_client is None:
                await client.aclose()
            await store.close()

    async def server_events(request: Request) -> Response:
        endpoint: ServerEventsEndpoint = request.app.state.server_events
        return await endpoint(request)

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/v1/events", server_events, methods=["POST"]),
        ],
        exception_handlers={
            HTTPException: _http_error,
            EventError: _event_error,
            OutboxUnavailable: _outbox_unavailable,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.ready = False
    return app
