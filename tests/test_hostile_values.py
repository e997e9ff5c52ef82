"""Hostile values in the browser path: each is answered, never a dropped connection."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from gateway.fake_api import FakeEventsApi
from tests.conftest import PIXEL, TOKEN, GatewayServer

SHOP = "http://shop.test"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


@pytest.mark.parametrize(
    "event",
    [
        {"page": {"url": "http://shop.test/p?ttclid=abc%0A"}},
        {"page": {"url": "http://shop.test/p"}, "user": {"ttclid": "evil\n"}},
        {"page": {"url": "http://shop.test/p"}, "user": {"ttp": "x\n"}},
    ],
)
def test_a_newline_in_a_click_id_or_ttp_is_dropped_and_answered(
    serve_gateway: Callable[..., GatewayServer], fake_api: FakeEventsApi, event: dict[str, object]
) -> None:
    """`$` matches before a trailing newline: such a value reached a Set-Cookie header and
    the server dropped the connection with two tracebacks. Values now match in full."""
    server = serve_gateway(
        pixels=[{"id": PIXEL, "access_token": TOKEN, "origins": [SHOP]}],
        cookies={"secrets": ["cookie-secret-0123456789abcdef"]},
    )
    body = {"event": "ViewContent", "event_id": "nl-1", **event}
    response = httpx.post(
        f"{server.url}/b",
        content=json.dumps(body),
        headers={"Content-Type": "text/plain", "Origin": SHOP, "User-Agent": CHROME},
    )
    assert response.status_code == 204
    assert all("\n" not in value for value in response.headers.get_list("set-cookie"))
    deadline = time.monotonic() + 10
    while not fake_api.accepted_events():
        assert time.monotonic() < deadline, "not delivered"
        time.sleep(0.02)
    [sent] = fake_api.accepted_events()
    assert "ttclid" not in sent["user"] and "\n" not in sent["user"].get("ttp", "")


@pytest.mark.parametrize(
    "properties",
    [{"contents": [{"content_id": "a", "quantity": "²"}]}, {"num_items": "①"}],
)
def test_a_unicode_digit_in_a_count_is_a_400(
    serve_gateway: Callable[..., GatewayServer], properties: dict[str, object]
) -> None:
    """'²'.isdigit() is true, and int('²') raised: a 500."""
    server = serve_gateway(pixels=[{"id": PIXEL, "access_token": TOKEN, "origins": [SHOP]}])
    body = {"event": "ViewContent", "event_id": "u-1", "properties": properties}
    response = httpx.post(
        f"{server.url}/b",
        content=json.dumps({**body, "page": {"url": "http://shop.test/p"}}),
        headers={"Content-Type": "text/plain", "Origin": SHOP, "User-Agent": CHROME},
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_event"
