"""The Gateway object: delivery in the serving process, an injected transport, error renderers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from gateway.core.errors import (
    EventError,
    OutboxUnavailable,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from gateway.fake_api import FakeEventsApi
from gateway.http.errors import GatewayJson, TikTokEnvelope
from tests.conftest import PIXEL, GatewayServer

API_KEY = "server-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
PURCHASE = {"event": "Purchase", "page": {"url": "https://shop.example/"}}


class RecordingTransport(httpx.AsyncBaseTransport):
    """Answers every Events API request with code 0 and keeps the bodies it was sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.arrived = threading.Condition()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(await request.aread())
        with self.arrived:
            self.bodies.append(body)
            self.arrived.notify_all()
        return httpx.Response(200, json={"code": 0, "message": "OK", "request_id": "r-1"})

    def wait_for(self, events: int, within: float = 10.0) -> list[dict[str, Any]]:
        received = lambda: sum(len(b["data"]) for b in self.bodies)  # noqa: E731
        with self.arrived:
            assert self.arrived.wait_for(lambda: received() >= events, within), self.bodies
        return [event for body in self.bodies for event in body["data"]]


def post(server: GatewayServer, events: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/events", json={"events": events}, headers=AUTH)


def test_an_injected_transport_delivers_in_the_serving_process(
    serve_gateway: Callable[..., GatewayServer],
) -> None:
    transport = RecordingTransport()
    server = serve_gateway(transport=transport, server_api={"api_keys": [API_KEY]})
    assert server.gateway is not None and server.gateway.client is not None  # no child process
    events = [{**PURCHASE, "event_id": f"t-{i}"} for i in range(3)]
    assert post(server, events).status_code == 202
    delivered = transport.wait_for(3)
    assert sorted(e["event_id"] for e in delivered) == ["t-0", "t-1", "t-2"]
    assert transport.bodies[0]["event_source_id"] == PIXEL


def test_separate_process_false_delivers_from_the_serving_process(
    serve_gateway: Callable[..., GatewayServer], fake_api: FakeEventsApi
) -> None:
    server = serve_gateway(
        delivery={"separate_process": False, "linger_ms": 0}, server_api={"api_keys": [API_KEY]}
    )
    assert server.gateway is not None and server.gateway.client is not None
    assert post(server, [{**PURCHASE, "event_id": "in-process"}]).status_code == 202
    deadline = time.monotonic() + 10
    while not fake_api.accepted_events():
        assert time.monotonic() < deadline, "not delivered"
        time.sleep(0.02)
    assert fake_api.accepted_events()[0]["event_id"] == "in-process"


def test_server_events_count_identifiers_left_out(
    serve_gateway: Callable[..., GatewayServer],
) -> None:
    server = serve_gateway(transport=RecordingTransport(), server_api={"api_keys": [API_KEY]})
    event = {**PURCHASE, "event_id": "p-1", "user": {"phone": "not a phone"}}
    assert post(server, [event]).status_code == 202
    metrics = httpx.get(server.metrics_url).text
    assert "tiktok_gateway_identifiers_dropped_total 1.0" in metrics
    assert 'tiktok_gateway_events_received_total{source="server"} 1.0' in metrics


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (
            EventError("events[1].user.email", "must be a string"),
            400,
            {
                "error": "invalid_event",
                "field": "events[1].user.email",
                "message": "must be a string",
            },
        ),
        (PayloadTooLarge("body", "too big"), 413, {"error": "payload_too_large"}),
        (Unauthorized("missing or wrong API key"), 401, {"error": "unauthorized"}),
        (UnsupportedMediaType("send JSON"), 415, {"error": "unsupported_media_type"}),
        (OutboxUnavailable("disk full"), 503, {"error": "unavailable"}),
        (RuntimeError("a bug"), 500, {"error": "internal error"}),
    ],
)
def test_our_json_renderer(error: Exception, status: int, body: dict[str, str]) -> None:
    answer = GatewayJson().render(error)
    assert answer.status == status
    assert body.items() <= answer.body.items()
    if isinstance(error, OutboxUnavailable):
        assert answer.headers == {"Retry-After": "5"}
        assert "disk full" not in str(answer.body)  # the cause is for logs, not for senders


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (EventError("data[0].event_id", "must be a string"), 40002),
        (PayloadTooLarge("data", "more than 1000 events"), 40002),
        (Unauthorized("missing or wrong access token"), 40105),
        (UnsupportedMediaType("send JSON"), 40000),
        (OutboxUnavailable("redis down"), 50002),
        (RuntimeError("a bug"), 50000),
    ],
)
def test_tiktok_envelope_renderer_answers_as_tiktok_does(error: Exception, code: int) -> None:
    answer = TikTokEnvelope().render(error)
    assert answer.status == 200
    assert answer.body["code"] == code
    assert set(answer.body) == {"code", "message", "request_id", "data"}
    if isinstance(error, EventError):
        assert answer.body["message"].startswith(error.field)
    if isinstance(error, OutboxUnavailable):
        assert answer.headers == {"Retry-After": "5"}
        assert "redis down" not in str(answer.body)


def test_a_trailing_slash_is_a_json_404_not_a_redirect(
    serve_gateway: Callable[..., GatewayServer],
) -> None:
    """Starlette redirected /v1/events/ to a URL built from the Host header."""
    server = serve_gateway(transport=RecordingTransport(), server_api={"api_keys": [API_KEY]})
    response = httpx.post(
        f"{server.url}/v1/events/", json={"events": [PURCHASE]}, headers={**AUTH, "Host": "evil"}
    )
    assert response.status_code == 404 and "location" not in response.headers
    assert response.json() == {"error": "Not Found"}
