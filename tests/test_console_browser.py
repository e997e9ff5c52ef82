"""The console in a real headless Chromium: log in, watch a purchase from the demo shop arrive
with its keys, score and TikTok's answer, replay a dead letter, and ask no other host.

Screenshots of the console are saved under tests/artifacts/ (ignored by git).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, expect
from starlette.requests import Request as StarletteRequest
from starlette.responses import HTMLResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.cli.demo import shop_routes
from gateway.fake_api import FakeEventsApi, Fault
from gateway.ingest.sources.beacon.snippet import STUB
from gateway.runtime import Gateway
from tests.conftest import (
    OTHER_PIXEL,
    PIXEL,
    TOKEN,
    USER_AGENT,
    GatewayServer,
    SettingsFactory,
    free_port,
    wait_for_events,
)

PASSWORD = "console-password-0123"
API_KEY = "server-key-0123456789"
SHOP_EMAIL = "alice@example.com"  # the demo shop's default
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture
def gateway(make_settings: SettingsFactory, tmp_path: Path) -> Iterator[GatewayServer]:
    """A gateway serving the demo shop on its own origin, two pixels, and the console."""
    port = free_port()
    settings = make_settings(
        pixels=[
            {"id": PIXEL, "access_token": TOKEN, "origins": [f"http://127.0.0.1:{port}"]},
            {"id": OTHER_PIXEL, "access_token": TOKEN},
        ],
        outbox={"url": f"sqlite:///{tmp_path}/outbox.sqlite3"},
        delivery={"linger_ms": 0, "backoff_initial_seconds": 0.05},
        cookies={"secrets": ["browser-test-secret-0123456789"]},
        server_api={"api_keys": [API_KEY]},
        console={"admin_password": PASSWORD},
    )
    served = Gateway(settings)
    app = create_app(served)
    app.router.routes.extend([*shop_routes(), Route("/pixel-test", pixel_page)])
    server = GatewayServer(app, port=port, gateway=served).start()
    try:
        yield server
    finally:
        server.stop()


PIXEL_PAGE = f"""<!doctype html><html><head><meta charset="utf-8"><script>
window.pixelSettled = !/pixel=1/.test(location.search);
if (!window.pixelSettled) {{  // as TikTok's base code: a queue, then its script, async
  var ttq = window.ttq = [];
  ttq.track = function () {{ ttq.push(["track"].concat([].slice.call(arguments))); }};
  var s = document.createElement("script");
  s.async = true;
  s.src = "https://analytics.tiktok.com/i18n/pixel/events.js?sdkid={PIXEL}&lib=ttq";
  s.onload = s.onerror = function () {{ window.pixelSettled = true; }};
  document.head.appendChild(s);
}}
</script>
{STUB}
<script async src="/gw.js"></script></head><body><button id="buy">buy</button><script>
document.getElementById("buy").onclick = function () {{
  ttgw.track("Purchase", {{value: 5, currency: "EUR"}}); }};
</script></body></html>"""


async def pixel_page(request: StarletteRequest) -> HTMLResponse:
    return HTMLResponse(PIXEL_PAGE)


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_console_shows_a_purchase_and_replays_a_dead_letter(
    browser: Browser, gateway: GatewayServer, fake_api: FakeEventsApi
) -> None:
    # headless Chromium's own user agent says "HeadlessChrome": the bot filter would drop it
    context = browser.new_context(viewport={"width": 1400, "height": 900}, user_agent=USER_AGENT)
    hosts: set[str] = set()

    def seen(request: Request) -> None:
        hosts.add(urlsplit(request.url).netloc)

    console = context.new_page()
    console.on("request", seen)
    console.goto(f"{gateway.url}/console")
    console.fill("#password", PASSWORD)
    console.click("#login")
    expect(console.locator("#status")).to_have_text("live")

    shop = context.new_page()
    shop.goto(f"{gateway.url}/shop")
    shop.wait_for_function("window.ttgw && !window.ttgw.q")
    shop.click("#view")
    shop.click("#cart")
    shop.click("#buy")

    purchase = console.locator("#events tbody tr.state-delivered", has_text="Purchase")
    expect(purchase).to_have_count(1, timeout=2000)  # within 2 s of the click
    row = purchase.inner_text()
    assert "email" in row and "ip_user_agent (socket)" in row
    assert "3/10" in row  # email 2 + IP and user agent 1
    assert "code 0" in row and "OK" in row
    expect(console.locator("#events tbody tr.state-delivered")).to_have_count(3)
    screenshot(console, "console-live")

    purchase.click()
    expect(console.locator("#detail")).to_contain_text("TikTok's response")
    expect(console.locator("#detail")).to_contain_text('"Access-Token": "(hidden)"')
    screenshot(console, "console-detail")

    # a dead letter: the fake refuses the second pixel's events until it is fixed
    fake_api.add_fault(Fault(code=40002, message="invalid event", pixel=OTHER_PIXEL, times=None))
    sent = httpx.post(
        f"{gateway.url}/v1/events",
        json={
            "pixel_id": OTHER_PIXEL,
            "event": "Lead",
            "event_id": "lead-dead-1",
            "page": {"url": "https://shop.example/"},
        },
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert sent.status_code == 202
    dead = console.locator("#events tbody tr.state-dead_lettered", has_text="lead-dead-1")
    expect(dead).to_have_count(1, timeout=10_000)
    assert "code 40002" in dead.inner_text()
    fake_api.clear_faults()
    refused = [r.request_id for r in fake_api.requests if r.code == 40002]
    dead.click()  # the history: local times (UTC on hover) and TikTok's request id
    steps = console.locator("#detail table.steps")
    expect(steps).to_contain_text(str(refused[-1]))
    died = steps.locator("tr", has_text="dead_lettered").locator("td").first
    expect(died).to_have_attribute("title", re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z$"))
    assert not re.fullmatch(r"[\d.]+", died.inner_text())

    console.click("nav button[data-tab=dead]")
    replay = console.locator("button.replay")
    expect(replay).to_have_count(1)
    expect(console.locator("#dead-body td.copy", has_text="lead-dead-1")).to_have_count(1)
    expect(console.locator("#dead-body td.copy", has_text=str(refused[-1]))).to_have_count(1)
    screenshot(console, "console-dead-letters")
    replay.click()
    expect(console.locator("#dead-body .done")).to_contain_text("replayed 1")
    console.click("nav button[data-tab=live]")
    delivered = console.locator("#events tbody tr.state-delivered", has_text="lead-dead-1")
    expect(delivered).to_have_count(1, timeout=10_000)
    assert any(e["event_id"] == "lead-dead-1" for e in fake_api.accepted_events())

    console.click("nav button[data-tab=overview]")
    expect(console.locator("#overview-body .card")).to_have_count(2)
    screenshot(console, "console-overview")

    html = console.content()
    assert TOKEN not in html and SHOP_EMAIL not in html
    assert hosts == {f"127.0.0.1:{gateway.port}"}, hosts
    context.close()


def test_the_snippet_says_whether_the_pixel_took_its_copy(
    browser: Browser, gateway: GatewayServer, fake_api: FakeEventsApi
) -> None:
    """Loaded (a stand-in pixel script), blocked (its host refused), absent (no pixel): each
    beacon says which, and /metrics and the console's overview count them."""
    stand_in = "window.pixelStandIn = true;"
    cases = (
        ("loaded", lambda route: route.fulfill(body=stand_in, content_type="text/javascript")),
        ("blocked", lambda route: route.abort()),
        ("absent", None),
    )
    for number, (state, handler) in enumerate(cases, start=1):
        context = browser.new_context(user_agent=USER_AGENT)
        if handler is not None:
            context.route("**/analytics.tiktok.com/**", handler)
        page = context.new_page()
        page.goto(f"{gateway.url}/pixel-test" + ("?pixel=1" if handler else ""))
        page.wait_for_function("window.pixelSettled && window.ttgw && !window.ttgw.q")
        if state == "loaded":
            assert page.evaluate("window.pixelStandIn") is True
        page.click("#buy")
        wait_for_events(fake_api, number, within=10)
        context.close()

    metrics = httpx.get(gateway.metrics_url).text
    for state in ("loaded", "blocked", "absent"):
        line = (
            "tiktok_gateway_browser_events_by_pixel_copy_total"
            f'{{event="Purchase",pixel="{PIXEL}",pixel_copy="{state}"}} 1.0'
        )
        assert line in metrics, (state, metrics)
    with httpx.Client(base_url=gateway.url) as client:
        assert client.post("/console/login", data={"password": PASSWORD}).status_code == 303
        overview = client.get("/console/overview").json()
    assert overview["pixels"][PIXEL]["recovered"] == 2


def test_a_flood_is_shown_as_a_sample_and_the_page_says_so(
    browser: Browser, gateway: GatewayServer
) -> None:
    context = browser.new_context(user_agent=USER_AGENT)
    console = context.new_page()
    console.goto(f"{gateway.url}/console")
    console.fill("#password", PASSWORD)
    console.click("#login")
    status = console.locator("#status")
    expect(status).to_have_text("live")

    page = {"url": "https://shop.example/"}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=gateway.url, headers=headers) as client:
        started, sent = time.monotonic(), 0
        while time.monotonic() - started < 1.0:  # well over 400 events a second, for a second
            batch = [
                {
                    "pixel_id": PIXEL,
                    "event": "ViewContent",
                    "event_id": f"flood-{sent + n}",
                    "page": page,
                }
                for n in range(200)
            ]
            assert client.post("/v1/events", json={"events": batch}).status_code == 202
            sent += len(batch)
    expect(status).to_contain_text("a flood: showing 1 event in")
    shown = console.locator("#events tbody tr").count()
    assert 0 < shown < sent / 2, (shown, sent)
    context.close()
