"""POST /v1/events: authentication, limits, field-named errors, 503 when nothing can be stored."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.fake_api import FakeEventsApi
from tests.conftest import OTHER_PIXEL, PIXEL, TOKEN, GatewayServer

API_KEY = "server-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
PURCHASE = {"event": "Purchase", "event_id": "o-1", "page": {"url": "https://shop.example/"}}


@pytest.fixture
def make_client(serve_gateway: Callable[..., GatewayServer]) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(**toml: Any) -> Client:
        toml.setdefault(
            "server_api", {"api_keys": [API_KEY], "max_body_bytes": 4096, "max_events": 5}
        )
        server = serve_gateway(**toml)
        client = Client(server, base_url=server.url, timeout=10)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


class Client(httpx.Client):
    def __init__(self, server: GatewayServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server = server


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    return make_client()


def test_accepted_events_are_delivered(client: Client, fake_api: FakeEventsApi) -> None:
    response = client.post("/v1/events", json={"events": [PURCHASE]}, headers=AUTH)
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "event_ids": ["o-1"]}

    deadline = time.monotonic() + 10
    while not fake_api.accepted_events():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert fake_api.accepted_events()[0]["event_id"] == "o-1"


def test_single_event_body_and_x_api_key(client: Client) -> None:
    response = client.post("/v1/events", json=PURCHASE, headers={"X-Api-Key": API_KEY})
    assert response.status_code == 202


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-key-0123456789"}, {"X-Api-Key": ""}]
)
def test_missing_or_wrong_key_is_401(client: Client, headers: dict[str, str]) -> None:
    response = client.post("/v1/events", json=PURCHASE, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_no_key_configured_turns_the_endpoint_off(make_client: Callable[..., Client]) -> None:
    client = make_client(server_api={})
    assert client.post("/v1/events", json=PURCHASE, headers=AUTH).status_code == 401


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        (b"{not json", "application/json", 400, "body"),
        (b"", "application/json", 400, "body"),
        (b"[1, 2]", "application/json", 400, "body"),
        (b'{"events": []}', "application/json", 400, "events"),
        (b'{"events": [], "extra": 1}', "application/json", 400, "extra"),
        (
            b'{"events": [{"event": "Purchase", "event_id": "x"}]}',
            "application/json",
            400,
            "events[0].page.url",
        ),
        (
            b'{"events": [{"event": "Purchase", "page": {"url": "https://s.example/"}, '
            b'"user": {"email": true}}]}',
            "application/json",
            400,
            "events[0].user.email",
        ),
        (
            b'{"pixel_id": "CNOPE", "events": [{"event": "Purchase"}]}',
            "application/json",
            400,
            "events[0].pixel_id",
        ),
        (
            b'{"events": [' + b",".join([b'{"event": "Lead"}'] * 6) + b"]}",
            "application/json",
            413,
            "events",
        ),
        (b'{"event": "Purchase", "x": "' + b"a" * 5000 + b'"}', "application/json", 413, "body"),
        (b"event=Purchase", "application/x-www-form-urlencoded", 415, None),
    ],
)
def test_bad_input_gets_a_4xx_json_error_naming_the_field(
    client: Client, body: bytes, content_type: str, status: int, field: str | None
) -> None:
    response = client.post(
        "/v1/events", content=body, headers={**AUTH, "Content-Type": content_type}
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    if field is not None:
        assert response.json()["field"] == field


def test_one_bad_event_rejects_the_whole_request(client: Client, fake_api: FakeEventsApi) -> None:
    body = {"events": [PURCHASE, {**PURCHASE, "properties": {"value": "$5", "currency": "USD"}}]}
    response = client.post("/v1/events", json=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["field"] == "events[1].properties.value"
    # the sentinel: an event posted after the refused request is delivered, and alone
    sentinel = {**PURCHASE, "event_id": "sentinel"}
    assert client.post("/v1/events", json=sentinel, headers=AUTH).status_code == 202
    deadline = time.monotonic() + 10
    while not fake_api.accepted_events():
        assert time.monotonic() < deadline, "the sentinel was not delivered"
        time.sleep(0.02)
    assert [e["event_id"] for e in fake_api.accepted_events()] == ["sentinel"]


def test_several_pixels_need_a_pixel_id(
    make_client: Callable[..., Client], fake_api: FakeEventsApi
) -> None:
    client = make_client(
        pixels=[{"id": PIXEL, "access_token": TOKEN}, {"id": OTHER_PIXEL, "access_token": TOKEN}]
    )
    missing = client.post("/v1/events", json={"events": [PURCHASE]}, headers=AUTH)
    assert (missing.status_code, missing.json()["field"]) == (400, "events[0].pixel_id")
    ok = client.post(
        "/v1/events", json={"pixel_id": OTHER_PIXEL, "events": [PURCHASE]}, headers=AUTH
    )
    assert ok.status_code == 202


def test_unwritable_outbox_is_503_and_not_ready(make_client: Callable[..., Client]) -> None:
    client = make_client(server_api={"api_keys": [API_KEY], "max_body_bytes": 65536})
    client.server.fill_the_disk()
    events = [
        {**PURCHASE, "event_id": f"o-{i}", "properties": {"description": "x" * 1500}}
        for i in range(5)
    ]
    response = client.post("/v1/events", json={"events": events}, headers=AUTH)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "outbox" in ready.json()["reason"]
