"""Shared fixtures: a real fake Events API on loopback, settings and a delivery helper."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.config import Settings, parse_settings
from gateway.event_parser import ParseRules, parse_event
from gateway.fake_api import FakeEventsApi
from gateway.tiktok import EventsApiClient, Outcome

PIXEL = "CTESTPIXEL0001"
OTHER_PIXEL = "CTESTPIXEL0002"
TOKEN = "test-token-0123456789abcdef"
NOW = 1_732_300_000.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake_api() -> Iterator[FakeEventsApi]:
    """A fake Events API accepting TOKEN for any pixel, on a free loopback port."""
    with FakeEventsApi({TOKEN: None}) as fake:
        yield fake


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(fake_api: FakeEventsApi) -> SettingsFactory:
    """Settings pointing at the fake API; keyword arguments are top-level TOML keys."""

    def make(**toml: Any) -> Settings:
        data: dict[str, Any] = {
            "api_base": fake_api.url,
            "api_timeout_seconds": 2.0,
            "pixels": [{"id": PIXEL, "access_token": TOKEN}],
        }
        data.update(toml)
        return parse_settings(data, {})

    return make


Deliver = Callable[..., Awaitable[list[dict[str, Any]]]]


@pytest.fixture
def deliver(fake_api: FakeEventsApi, make_settings: SettingsFactory) -> Deliver:
    """Parse one input event as the gateway does, send it over HTTP, return what the fake got."""

    async def run(raw: dict[str, Any], *, now: float = NOW, **toml: Any) -> list[dict[str, Any]]:
        settings = make_settings(**toml)
        pixel = settings.pixels[0]
        raw = {"page": {"url": "https://shop.example/p"}, **raw}
        parsed = parse_event(raw, pixel=pixel, rules=ParseRules.from_settings(settings), now=now)
        before = len(fake_api.requests)
        async with EventsApiClient(settings.api_base) as client:
            outcome: Outcome = await client.send(
                parsed.events[0].destination, parsed.events, pixel.access_token
            )
        assert outcome.delivered, outcome
        received = fake_api.requests[before:]
        assert len(received) == 1
        data: list[dict[str, Any]] = received[0].body["data"]
        return data

    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m gateway` in a real child process with a clean gateway environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "GATEWAY_"))}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def wait_for_http(url: str, *, timeout: float = 15.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=1.0)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
