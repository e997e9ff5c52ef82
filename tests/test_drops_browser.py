"""Every drop explained, in a real headless Chromium: a click in the demo shop from a
headless browser (its user agent says HeadlessChrome) is a dropped row with the reason
"bot" in the console, the shop page says so, and the console's search finds it and a
delivered event by their event_id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from gateway.app import create_app
from gateway.cli.demo import shop_routes
from gateway.fake_api import FakeEventsApi
from gateway.runtime import Gateway
from tests.conftest import (
    PIXEL,
    TOKEN,
    USER_AGENT,
    GatewayServer,
    SettingsFactory,
    free_port,
    wait_for_events,
)

PASSWORD = "console-password-0123"


@pytest.fixture
def gateway(make_settings: SettingsFactory, tmp_path: Path) -> Iterator[GatewayServer]:
    """A gateway serving the demo shop (with its what-happened route) and the console."""
    port = free_port()
    settings = make_settings(
        pixels=[{"id": PIXEL, "access_token": TOKEN, "origins": [f"http://127.0.0.1:{port}"]}],
        outbox={"url": f"sqlite:///{tmp_path}/outbox.sqlite3"},
        delivery={"linger_ms": 0},
        cookies={"secrets": ["browser-test-secret-0123456789"], "secure": False},
        console={"admin_password": PASSWORD},
    )
    served = Gateway(settings)
    app = create_app(served)
    app.router.routes.extend(shop_routes(served))
    server = GatewayServer(app, port=port, gateway=served).start()
    try:
        yield server
    finally:
        server.stop()


def search(console: Page, wanted: str) -> str:
    console.fill("#search-q", wanted)
    console.click("#search-go")
    expect(console.locator("#search-note")).to_contain_text("found")
    return console.locator("#search-results tbody").inner_text()


def test_a_headless_click_is_a_dropped_row_and_the_search_finds_it(
    browser: Browser, gateway: GatewayServer, fake_api: FakeEventsApi
) -> None:
    person = browser.new_context(user_agent=USER_AGENT)  # a person's Chrome, as it says
    console = person.new_page()
    console.goto(f"{gateway.url}/console")
    console.fill("#password", PASSWORD)
    console.click("#login")
    expect(console.locator("#status")).to_have_text("live")

    headless = browser.new_context()  # Chromium's own user agent: HeadlessChrome
    robot = headless.new_page()
    assert "HeadlessChrome" in robot.evaluate("navigator.userAgent")
    robot.goto(f"{gateway.url}/shop")
    robot.wait_for_function("window.ttgw && !window.ttgw.q")
    robot.click("#buy")
    expect(robot.locator("#sent")).to_contain_text("Purchase was dropped: bot: headless")

    dropped = console.locator("#events tbody tr.state-dropped", has_text="Purchase")
    expect(dropped).to_have_count(1, timeout=5000)
    expect(dropped).to_contain_text("dropped · bot: headless")
    dropped_id = dropped.locator("td.c4").inner_text()
    assert dropped_id

    shop = person.new_page()
    shop.goto(f"{gateway.url}/shop")
    shop.wait_for_function("window.ttgw && !window.ttgw.q")
    shop.click("#buy")
    expect(shop.locator("#sent")).to_contain_text("Purchase accepted by the gateway")
    delivered_id = wait_for_events(fake_api, 1)[0]["event_id"]
    delivered = console.locator("#events tbody tr.state-delivered", has_text=delivered_id)
    expect(delivered).to_have_count(1, timeout=5000)
    assert not console.locator("#events tbody tr.state-dropped", has_text=delivered_id).count()

    console.click("nav button[data-tab=search]")
    found = search(console, delivered_id)
    assert "recent events" in found and "delivered" in found and delivered_id in found
    found = search(console, dropped_id)
    assert "dropped" in found and "bot: headless" in found and dropped_id in found
    assert [e["event_id"] for e in fake_api.accepted_events()] == [delivered_id]
    headless.close()
    person.close()
