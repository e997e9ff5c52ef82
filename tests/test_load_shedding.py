"""Load shedding: past a backlog limit the beacon refuses (503) before the store fills,
server events still come in, /readyz and /metrics say why, and it ends when delivery
catches up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.core.errors import OutboxUnavailable
from gateway.fake_api import FakeEventsApi
from gateway.storage.outbox import Backlog
from gateway.storage.outbox.guard import MB, BacklogGuard, BacklogLimits
from tests.conftest import PIXEL, TOKEN, GatewayServer, wait_until

SHOP = "http://shop.test"
API_KEY = "server-api-key-0123456789"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
LIMITS = BacklogLimits(max_bytes=100 * MB, max_age_seconds=3600, min_free_bytes=10 * MB)


@pytest.mark.parametrize(
    ("backlog", "reason"),
    [
        (Backlog(stored_bytes=50 * MB, oldest_age_seconds=60, free_bytes=None), None),
        (Backlog(stored_bytes=101 * MB, oldest_age_seconds=60, free_bytes=None), "101 MB"),
        (Backlog(stored_bytes=MB, oldest_age_seconds=7200, free_bytes=None), "2.0 h old"),
        (Backlog(stored_bytes=MB, oldest_age_seconds=None, free_bytes=5 * MB), "5 MB left"),
        (Backlog(stored_bytes=MB, oldest_age_seconds=None, free_bytes=50 * MB), None),
    ],
)
def test_the_verdict_names_the_limit_passed(backlog: Backlog, reason: str | None) -> None:
    verdict = LIMITS.verdict(backlog)
    assert verdict == reason if reason is None else reason in (verdict or "")
    assert BacklogLimits(0, 0, 0).verdict(backlog) is None  # 0 turns every limit off


def _events(first: int, count: int) -> dict[str, Any]:
    padding = "x" * 900  # ~1 KB per stored event, so a thousand pass a 1 MB limit
    return {
        "events": [
            {
                "event": "Lead",
                "event_id": f"s-{n}",
                "page": {"url": f"{SHOP}/"},
                "properties": {"description": padding},
            }
            for n in range(first, first + count)
        ]
    }


def test_beacons_are_shed_past_the_backlog_limit_until_delivery_catches_up(
    serve_gateway: Callable[..., GatewayServer], fake_api: FakeEventsApi, tmp_path: Path
) -> None:
    fake_api.add_fault(status=503, times=None)  # TikTok down: nothing leaves the outbox
    server = serve_gateway(
        pixels=[{"id": PIXEL, "access_token": TOKEN, "origins": [SHOP]}],
        server_api={"api_keys": [API_KEY]},
        outbox={"url": f"sqlite:///{tmp_path}/o.sqlite3", "max_backlog_mb": 1},
        delivery={"linger_ms": 0, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2},
    )
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"})
    browser = httpx.Client(
        base_url=server.url,
        headers={"Origin": SHOP, "Content-Type": "text/plain", "User-Agent": CHROME},
    )
    beacon = b'{"event":"ViewContent","page":{"url":"http://shop.test/p"}}'
    assert browser.post("/b", content=beacon).status_code == 204

    for first in range(0, 2000, 500):  # ~2 MB of server events, past the 1 MB limit
        assert api.post("/v1/events", json=_events(first, 500)).status_code == 202
    wait_until(lambda: browser.post("/b", content=beacon).status_code == 503, "never shed")

    shed = browser.post("/b", content=beacon)
    assert shed.status_code == 503 and shed.json()["error"] == "unavailable"
    assert shed.headers["retry-after"] == "60"
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "shedding"
    assert "max_backlog_mb" in ready.json()["reason"]
    metrics = httpx.get(server.metrics_url).text
    assert "tiktok_gateway_shedding 1.0" in metrics
    assert "tiktok_gateway_beacons_shed_total" in metrics
    # server senders keep going: they retry, and their events are the valuable ones
    assert api.post("/v1/events", json=_events(5000, 1)).status_code == 202

    fake_api.clear_faults()  # TikTok is back: the backlog drains, beacons come in again
    wait_until(lambda: browser.post("/b", content=beacon).status_code == 204, "still shedding")
    assert httpx.get(f"{server.url}/readyz").json()["status"] == "ready"
    api.close()
    browser.close()


class _SwallowingOutbox:
    """An outbox whose backlog reading turns its cancellation into its own error, as
    redis-py may when a command is cancelled mid-flight."""

    def __init__(self) -> None:
        self.reading = asyncio.Event()

    async def backlog(self, now: float) -> Backlog:
        self.reading.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise OutboxUnavailable("connection closed") from None
        raise AssertionError("not reached")


@pytest.mark.anyio
async def test_the_guard_stops_even_when_a_reading_swallows_its_cancellation() -> None:
    outbox = _SwallowingOutbox()
    guard = BacklogGuard(outbox, BacklogLimits(10 * MB, 3600.0, 0))  # type: ignore[arg-type]
    guard.start()
    await asyncio.wait_for(outbox.reading.wait(), 5)
    stopping = asyncio.create_task(guard.stop())
    done, _ = await asyncio.wait({stopping}, timeout=3)
    assert done, "stop() waited for a cancel that was lost"  # (the task is left behind)
