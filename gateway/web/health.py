"""Liveness, readiness and Prometheus metrics: the routes an orchestrator and a scraper call."""

from __future__ import annotations

import ipaddress

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.core.errors import OutboxUnavailable
from gateway.runtime import Gateway
from gateway.web.metrics import CONTENT_TYPE

_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


class Health:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

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
        pixels = len(gateway.settings.pixels)
        if gateway.guard.shedding:  # still ready: server events are taken, snippets served
            return JSONResponse(
                {"status": "shedding", "reason": gateway.guard.shedding, "pixels": pixels}
            )
        return JSONResponse({"status": "ready", "pixels": pixels})

    async def metrics(self, request: Request) -> Response:
        """Prometheus metrics, for scrapers on loopback or a private network only."""
        peer = request.client.host if request.client else ""
        try:
            private = any(ipaddress.ip_address(peer) in n for n in _PRIVATE_NETWORKS)
        except ValueError:
            private = False
        if not private:
            return JSONResponse({"error": "forbidden", "message": "metrics are internal"}, 403)
        return Response(self._gateway.metrics.render(), media_type=CONTENT_TYPE)


def routes(gateway: Gateway) -> list[BaseRoute]:
    health = Health(gateway)
    return [
        Route("/healthz", health.healthz, methods=["GET", "HEAD"]),
        Route("/readyz", health.readyz, methods=["GET", "HEAD"]),
        Route("/metrics", health.metrics, methods=["GET"]),
    ]
