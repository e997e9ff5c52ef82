"""`/metrics` on its own listener (loopback by default) or to a bearer token — never on the
public port to whoever sits on a private network, as a load balancer does."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from gateway.core.errors import ConfigError
from gateway.settings import parse_settings
from tests.conftest import PIXEL, TOKEN, GatewayServer

METRICS_TOKEN = "metrics-token-0123456789"


def test_the_public_port_does_not_serve_metrics_even_to_a_private_peer(
    serve_gateway: Callable[..., GatewayServer],
) -> None:
    server = serve_gateway()  # the client is 127.0.0.1: loopback was trusted before
    public = httpx.get(f"{server.url}/metrics")
    assert public.status_code == 404 and public.json()["error"] == "not_found"
    scraped = httpx.get(server.metrics_url)
    assert scraped.status_code == 200 and "tiktok_gateway_events_received" in scraped.text


def test_the_metrics_listener_serves_only_metrics_and_probes(
    serve_gateway: Callable[..., GatewayServer],
) -> None:
    server = serve_gateway(server_api={"api_keys": ["server-api-key-0123456789"]})
    base = server.metrics_url.removesuffix("/metrics")
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert httpx.get(f"{base}/readyz").json()["status"] == "ready"
    for method, path in (("POST", "/v1/events"), ("POST", "/b"), ("GET", "/gw.js")):
        answer = httpx.request(method, f"{base}{path}")
        assert answer.status_code == 404 and answer.json()["error"] == "not_found"


def test_a_bearer_token_opens_metrics_on_the_public_port(
    serve_gateway: Callable[..., GatewayServer],
) -> None:
    server = serve_gateway(metrics={"port": 0, "bearer_tokens": [METRICS_TOKEN]})
    url = f"{server.url}/metrics"
    assert httpx.get(url).status_code == 404
    assert httpx.get(url, headers={"Authorization": "Bearer wrong-token-000000"}).status_code == 404
    scraped = httpx.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status_code == 200 and "tiktok_gateway_" in scraped.text


def test_wrong_metrics_tokens_spend_the_failed_auth_budget(
    serve_gateway: Callable[..., GatewayServer],
) -> None:
    """300 guesses at the bearer token were never locked out (issue 21.14): past the
    budget the client is refused before its token is compared, the right one included."""
    server = serve_gateway(
        metrics={"port": 0, "bearer_tokens": [METRICS_TOKEN]},
        rate_limit={"failed_auth_per_minute": 0.001, "failed_auth_burst": 3},
    )
    url = f"{server.url}/metrics"
    with httpx.Client() as http:
        guesses = [
            http.get(url, headers={"Authorization": f"Bearer guess-{n}-0123456789"}).status_code
            for n in range(4)
        ]
        right = http.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert guesses == [404, 404, 404, 429]
    assert right.status_code == 429 and int(right.headers["retry-after"]) >= 1


def test_metrics_may_not_share_the_public_port() -> None:
    pixels = [{"id": PIXEL, "access_token": TOKEN}]
    with pytest.raises(ConfigError, match=r"metrics\.port"):
        parse_settings({"pixels": pixels, "metrics": {"port": 8080}}, {})
    with pytest.raises(ConfigError, match=r"metrics\.port"):
        parse_settings({"pixels": pixels}, {}, overrides={"port": 9464})
