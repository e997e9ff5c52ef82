"""The Starlette application factory: routes, error handlers and the lifespan.

Everything the gateway runs is built here from one `Settings` and owned by the lifespan:
it opens the outbox, starts delivery (a child process, or a dispatcher in this one), and on
shutdown stops delivery (grace period), closes the HTTP client and the outbox, in that
order. No module-level singletons.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.core.errors import EventError
from gateway.delivery.client import EventsApiClient
from gateway.delivery.dispatcher import Delivery, DeliveryOptions, Dispatcher
from gateway.delivery.process import DeliveryProcess
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.sources.beacon.cookies import VisitorCookies
from gateway.ingest.sources.beacon.endpoint import BeaconEndpoint
from gateway.ingest.sources.beacon.snippet import SnippetEndpoint
from gateway.ingest.sources.server_api import ServerEventsEndpoint
from gateway.outbox import Outbox, OutboxUnavailable, open_outbox
from gateway.settings import Settings
from gateway.web.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: started, delivery running, and the outbox writable right now."""
    state = request.app.state
    if not getattr(state, "ready", False):
        return JSONResponse({"status": "starting"}, status_code=503)
    if not state.delivery.running:
        return JSONResponse({"status": "not ready", "reason": "delivery stopped"}, 503)
    try:
        await state.outbox.check_writable()
    except OutboxUnavailable as exc:
        return JSONResponse({"status": "not ready", "reason": str(exc)}, status_code=503)
    return JSONResponse({"status": "ready", "pixels": len(state.settings.pixels)})


_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


async def metrics(request: Request) -> Response:
    """Prometheus metrics, for scrapers on loopback or a private network only."""
    peer = request.client.host if request.client else ""
    try:
        private = any(ipaddress.ip_address(peer) in n for n in _PRIVATE_NETWORKS)
    except ValueError:
        private = False
    if not private:
        return JSONResponse({"error": "forbidden", "message": "metrics are internal"}, 403)
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE)


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


class BeaconFastPath:
    """Sends the beacon path straight to its endpoint, past routing and exception wrapping.

    The beacon is the one hot path: every page view of every visitor. The endpoint is an
    ASGI app built by the lifespan, so it is looked up on app.state at call time.
    """

    def __init__(self, app: ASGIApp, *, path: str) -> None:
        self._app = app
        self._path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self._path:
            await scope["app"].state.beacon(scope, receive, send)
        else:
            await self._app(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    api_client: EventsApiClient | None = None,
    outbox: Outbox | None = None,
) -> Starlette:
    """Wire the gateway for `settings`; the client and outbox may be injected (tests)."""
    store = outbox or open_outbox(settings.outbox)
    tokens = {p.id: p.access_token for p in settings.pixels}
    registry = Metrics()
    snippet = SnippetEndpoint(settings)

    in_child = settings.delivery.separate_process and api_client is None and outbox is None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client: EventsApiClient | None = None
        await store.open()
        delivery: Delivery
        if in_child:  # an injected client or outbox cannot cross into a child: tests only
            delivery = DeliveryProcess(settings, on_restart=store.release_leases)
        else:
            client = api_client or EventsApiClient(
                settings.api_base,
                timeout=settings.api_timeout_seconds,
                max_connections=settings.delivery.concurrency,
            )
            options = DeliveryOptions.from_settings(settings)
            delivery = Dispatcher(store, client, tokens, options=options)
        pipeline = Pipeline(settings, store, delivery)
        app.state.outbox, app.state.delivery, app.state.pipeline = store, delivery, pipeline
        app.state.server_events = ServerEventsEndpoint(pipeline, registry)
        app.state.beacon = BeaconEndpoint(
            pipeline, settings, registry, VisitorCookies(settings.cookies)
        )
        registry.watch_delivery(lambda: delivery.stats)
        try:
            await delivery.start()
        except Exception:
            await store.close()
            raise
        app.state.ready = True
        log.info("gateway ready: %d pixel(s), outbox %r", len(settings.pixels), store)
        try:
            yield
        finally:
            app.state.ready = False
            await delivery.stop()
            if client is not None and api_client is None:
                await client.aclose()
            await store.close()

    async def server_events(request: Request) -> Response:
        endpoint: ServerEventsEndpoint = request.app.state.server_events
        return await endpoint(request)

    async def serve_snippet(request: Request) -> Response:
        return await snippet(request)

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/v1/events", server_events, methods=["POST"]),
            Route(settings.browser.snippet_path, serve_snippet, methods=["GET", "HEAD"]),
        ],
        exception_handlers={
            HTTPException: _http_error,
            EventError: _event_error,
            OutboxUnavailable: _outbox_unavailable,
            Exception: _unexpected,
        },
        middleware=[Middleware(BeaconFastPath, path=settings.browser.beacon_path)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = registry
    app.state.ready = False
    return app
