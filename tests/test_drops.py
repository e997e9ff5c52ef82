"""Every drop explained: dropped and refused events are rows with their reason, carry no
personal data, and the console's search finds them beside accepted, delivered, waiting and
dead-lettered events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.console.live import Watchers
from gateway.ingest.sources.beacon.enrich import BOT_RULES, bot_rule
from gateway.telemetry.drops import RecentDrops
from gateway.telemetry.recent import RecentEvents
from tests.conftest import PIXEL, TOKEN, GatewayServer

SHOP = "http://shop.test"
PASSWORD = "console-password-0123"
API_KEY = "server-key-0123456789"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
HEADLESS = CHROME.replace("Chrome/", "HeadlessChrome/")
PAGE = {"url": "http://shop.test/product/1"}
SECRET_EMAIL = "bob.secret@example.com"


@pytest.mark.parametrize(
    ("agent", "rule"),
    [
        (HEADLESS, "headless"),
        ("curl/8.5.0", "crawler pattern"),
        (
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "crawler pattern",
        ),
        ("", "user agent missing or oversized"),
        (CHROME, None),
    ],
)
def test_the_bot_filter_names_the_rule_that_caught_a_user_agent(
    agent: str, rule: str | None
) -> None:
    assert bot_rule(agent) == rule
    assert rule is None or rule in BOT_RULES


class Site:
    """A gateway with the console, its beacon and server API, and a signed-in console."""

    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=10)
        login = self.http.post("/console/login", data={"password": PASSWORD})
        assert login.status_code == 303

    def beacon(self, body: Any, *, origin: str = SHOP, agent: str = CHROME) -> httpx.Response:
        headers = {"Content-Type": "text/plain", "User-Agent": agent, "Origin": origin}
        return self.http.post("/b", content=json.dumps(body).encode(), headers=headers)

    def server_event(self, event: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        body = {"pixel_id": PIXEL, "page": {"url": "https://shop.test/"}, **event}
        return self.http.post("/v1/events", json=body, headers=headers)

    def search(self, wanted: str) -> list[dict[str, Any]]:
        answer = self.http.get("/console/search", params={"q": wanted})
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()["found"]
        return found

    def dropped(self) -> list[dict[str, Any]]:
        """The dropped rows a console page is sent when it opens (oldest first)."""
        assert self.server.gateway is not None
        expected = self.server.gateway.drops.cursor()
        rows: list[dict[str, Any]] = []
        with self.http.stream("GET", "/console/stream") as stream:
            for line in stream.iter_lines():
                if len(rows) >= expected:
                    break
                if line.startswith("data: "):
                    row = json.loads(line[6:])
                    if row.get("kind") == "dropped":  # beside accepted events, by time
                        rows.append(row)
        return rows


@pytest.fixture
def make_site(serve_gateway: Callable[..., GatewayServer]) -> Iterator[Callable[..., Site]]:
    made: list[Site] = []

    def make(**toml: Any) -> Site:
        toml.setdefault("pixels", [{"id": PIXEL, "access_token": TOKEN, "origins": [SHOP]}])
        toml.setdefault("cookies", {"secrets": ["cookie-secret-0123456789abcdef"]})
        site = Site(
            serve_gateway(
                console={"admin_password": PASSWORD},
                server_api={"api_keys": [API_KEY]},
                **toml,
            )
        )
        made.append(site)
        return site

    yield make
    for site in made:
        site.http.close()


def test_each_drop_and_refusal_is_a_row_with_its_reason(make_site: Callable[..., Site]) -> None:
    site = make_site()
    bot = site.beacon({"event": "ViewContent", "event_id": "bot-1", "page": PAGE}, agent=HEADLESS)
    assert bot.status_code == 204 and bot.headers["x-dropped"] == "1"
    denied = {"event": "Lead", "event_id": "denied-1", "consent": "denied", "page": PAGE}
    assert site.beacon(denied).headers["x-dropped"] == "1"
    assert site.beacon({"event": "Lead"}, origin="http://elsewhere.test").status_code == 403
    invalid = {
        "event": "Purchase",
        "event_id": "invalid-1",
        "page": PAGE,
        "properties": {"value": "lots"},
        "user": {"email": SECRET_EMAIL},
    }
    assert site.beacon(invalid).status_code == 400
    old = {"event": "Purchase", "event_id": "old-1", "event_time": int(time.time()) - 40 * 86400}
    assert site.server_event(old).status_code == 400
    leaky = {"event": "Lead", "event_id": SECRET_EMAIL, "consent": "denied", "page": PAGE}
    assert site.beacon(leaky).status_code == 204

    shown = site.dropped()
    assert [row["reason"] for row in shown].count("invalid") == 1  # told once, with its ids
    rows = {row["event_id"]: row for row in shown}
    assert rows["bot-1"]["reason"] == "bot" and rows["bot-1"]["why"] == "bot: headless"
    assert rows["bot-1"]["event"] == "ViewContent" and rows["bot-1"]["pixel"] == PIXEL
    assert rows["denied-1"]["why"] == "consent denied: denied"
    assert rows["invalid-1"]["why"] == "invalid field: properties.value"
    assert rows["old-1"]["reason"] == "too_old" and rows["old-1"]["source"] == "server"
    assert rows["old-1"]["why"] == "too old: event_time"
    refused = [row for row in rows.values() if row["reason"] == "origin_not_allowed"]
    assert len(refused) == 1 and refused[0]["why"] == "origin not allowed"
    # an email given as an event_id, or beside an invalid field, never reaches the page
    assert "redacted" in rows and rows["redacted"]["reason"] == "no_consent"
    page = json.dumps(site.dropped()) + json.dumps(site.search("invalid-1"))
    assert SECRET_EMAIL not in page and "bob.secret" not in page


def test_rate_limited_beacons_are_rows(make_site: Callable[..., Site]) -> None:
    site = make_site(rate_limit={"beacon_per_second": 0.01, "beacon_burst": 1})
    event = {"event": "ViewContent", "event_id": "fast-1", "page": PAGE}
    assert site.beacon(event).status_code == 204
    assert site.beacon({**event, "event_id": "fast-2"}).status_code == 429
    assert [row["reason"] for row in site.dropped()] == ["rate_limited"]


def test_a_flood_of_drops_is_sampled_and_the_page_is_told() -> None:
    import asyncio

    now = [1000.0]
    drops = RecentDrops(1000, clock=lambda: now[0], keep_per_second=40)
    for n in range(0, 400, 10):  # 800 drops a second
        items = [{"event": "ViewContent", "event_id": f"f-{n + i}"} for i in range(10)]
        drops.dropped("bot", "browser", "headless", items, PIXEL)
        now[0] += 0.0125
    assert drops.keep_every > 1
    kept = drops.latest(1000)
    assert drops.cursor() == 400  # every drop counted; after the first quarter second
    later = [d for d in kept if d.sequence > 220]  # (all kept until the rate is known)
    assert 0 < len(later) < 180 / 5, len(later)

    async def scenario() -> None:
        stream = Watchers(RecentEvents(10, clock=lambda: now[0]), drops=drops).stream()
        assert await anext(stream) == b": watching\n\n"
        assert b'"kind":"dropped"' in await anext(stream)
        await stream.aclose()

    asyncio.run(scenario())
