"""Liveness, readiness and Prometheus metrics: the routes an orchestrator and a scraper call
(on the public listener and on the metrics listener, `http/listeners.py`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.core.errors import OutboxUnavailable, TooManyRequests, Unauthorized
from gateway.http.auth import Gate
from gateway.http.listeners import on_metrics_listener
from gateway.runtime import Gateway
from gateway.telemetry.metrics import CONTENT_TYPE


def _not_found() -> Response:
    return JSONResponse({"error": "not_found", "message": "Not Found"}, 404)


class Health:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._gate = Gate(
            gateway.auth, gateway.limits.limit("metrics", 0, 0), "metrics"
        )  # budget only
        metrics = gateway.settings.metrics
        self._metrics_port = metrics.port

    async def healthz(self, request: Request) -> Response:
        """Liveness: the process answers."""
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """Readiness: started, delivery running, and the outbox writable right now.

        While browser events are shed (outbox/guard.py) the answer stays 200 with the reason:
        the gateway still takes server events and serves the snippet, and with replicas
        sharing one Redis every replica sheds alike, so a 503 would only take all of them
        out of the load balancer."""
        gateway = self._gateway
        if not gateway.started:
            return JSONResponse({"status": "starting"}, status_code=503)
        if not gateway.delivery.running:
            return JSONResponse({"status": "not ready", "reason": "delivery stopped"}, 503)
        try:
            await gateway.outbox.check_writable()
        except OutboxUnavailable as exc:
            return JSONResponse({"status": "not ready", "reason": str(exc)}, status_code=503)
        pixels = len(gateway.pipeline.pixel_ids)
        if gateway.guard.shedding:  # still ready: server events are taken, snippets served
            return JSONResponse(
                {"status": "shedding", "reason": gateway.guard.shedding, "pixels": pixels}
            )
        return JSONResponse({"status": "ready", "pixels": pixels})

    async def metrics(self, request: Request) -> Response:
        """Prometheus metrics: on the metrics listener, or to a configured bearer token. A
        wrong token counts against the client's failed-auth budget, as every key does; past
        it the client is refused (429) before its token is compared."""
        if on_metrics_listener(request.scope, self._metrics_port):
            return Response(self._gateway.metrics.render(), media_type=CONTENT_TYPE)
        credentials = self._gateway.auth.current
        if not credentials.metrics_tokens or "authorization" not in request.headers:
            return _not_found()
        try:
            await self._gate.check(request)
            if not credentials.metrics(request):
                await self._gate.refuse(request, "wrong metrics token")
        except TooManyRequests as exc:
            body = {"error": exc.error, "message": str(exc)}
            return JSONResponse(body, 429, headers=dict(exc.headers or {}))
        except Unauthorized:
            return _not_found()  # as for no token: the endpoint does not say it exists
        return Response(self._gateway.metrics.render(), media_type=CONTENT_TYPE)


def routes(gateway: Gateway) -> list[BaseRoute]:
    health = Health(gateway)
    return [
        Route("/healthz", health.healthz, methods=["GET", "HEAD"]),
        Route("/readyz", health.readyz, methods=["GET", "HEAD"]),
        Route("/metrics", health.metrics, methods=["GET"]),
    ]
