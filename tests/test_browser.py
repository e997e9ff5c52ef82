"""The snippet in a real headless Chromium: shop page, gateway and fake Events API on loopback.

The shop page runs on one port, the gateway on another and the fake Events API on a third.
A stand-in `ttq` on the page records what the pixel would have received; the test then
compares it with what reached the fake Events API through the gateway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from gateway.fake_api import FakeEventsApi
from gateway.ingest.sources.beacon.snippet import STUB
from tests.conftest import (
    PIXEL,
    USER_AGENT,
    Site,
    open_page,
    wait_for_events,
)

TTP = "2F7h37YkS1j57AYSKTI7IHhJPYH"
TTCLID = "E.C.P.browserclick123"
EMAIL_HASH = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"


def shop_app(gateway_url: str) -> Starlette:
    """A test shop: a stand-in pixel, the queue stub and the gateway's script tag."""

    def page(body: str, *, pixel_blocked: bool = False) -> str:
        pixel = (
            '<script src="https://analytics.tiktok.com/i18n/pixel/events.js"></script>'
            if pixel_blocked
            else """<script>
  window.pixelCalls = [];
  window.ttq = {track: function (name, params, options) {
    window.pixelCalls.push({name: name, params: params, options: options}); }};
</script>"""
        )
        return f"""<!doctype html><html><head><meta charset="utf-8">{pixel}
{STUB}
<script>document.cookie = "_ttp={TTP}; path=/";</script>
<script async src="{gateway_url}/gw.js"></script>
</head><body>{body}</body></html>"""

    async def landing(request: Request) -> HTMLResponse:
        return HTMLResponse(
            page(
                """<a id="next" href="/next">next</a><script>
  ttgw.identify({email: " ALICE_abc@gmail.com "});
  window.firstId = null;
  ttgw.track("add_to_cart", {value: 9.5, currency: "EUR",
    contents: [{content_id: "SKU_1", price: 9.5, quantity: 1}]});
</script>"""
            )
        )

    async def next_page(request: Request) -> HTMLResponse:
        return HTMLResponse(
            page(
                """<button id="buy">buy</button><script>
  document.getElementById("buy").addEventListener("click", function () {
    ttgw.track("Purchase", {value: 20, currency: "EUR"}, {email: "alice_abc@gmail.com"});
    location.href = "/thanks";
  });
</script>"""
            )
        )

    async def thanks(request: Request) -> HTMLResponse:
        return HTMLResponse("<!doctype html><p>thanks</p>")

    async def blocked(request: Request) -> HTMLResponse:
        return HTMLResponse(
            page('<script>ttgw.track("Lead", {}, {email: "alice_abc@gmail.com"});</script>',
                 pixel_blocked=True)
        )  # fmt: skip

    return Starlette(
        routes=[
            Route("/landing", landing),
            Route("/next", next_page),
            Route("/thanks", thanks),
            Route("/blocked", blocked),
        ]
    )


@pytest.fixture
def shop(make_site: Callable[[Callable[[str], Starlette]], Site]) -> Site:
    return make_site(shop_app)


def test_pixel_and_gateway_share_the_event_and_the_server_enriches_it(
    shop: Site, fake_api: FakeEventsApi
) -> None:
    landing = open_page(shop.context, f"{shop.url}/landing?ttclid={TTCLID}&utm_source=tiktok")
    [event] = wait_for_events(fake_api, 1)
    [pixel_call] = landing.evaluate("window.pixelCalls")
    assert pixel_call["name"] == "AddToCart" == event["event"]
    assert pixel_call["options"]["event_id"] == event["event_id"]
    user = event["user"]
    assert user["ip"] == "127.0.0.1"
    assert user["user_agent"] == USER_AGENT == landing.evaluate("navigator.userAgent")
    assert user["ttp"] == TTP
    assert user["ttclid"] == TTCLID
    assert user["email"] == [EMAIL_HASH]
    assert event["page"]["url"] == f"{shop.url}/landing?ttclid={TTCLID}&utm_source=tiktok"
    assert event["properties"]["value"] == 9.5
    assert event["event_source_id"] == PIXEL

    cookies = {c["name"]: c for c in shop.context.cookies()}
    ttclid_cookie = cookies["ttclid"]
    assert ttclid_cookie["value"] == TTCLID
    assert ttclid_cookie["path"] == "/" and ttclid_cookie["secure"] is True
    assert ttclid_cookie["sameSite"] == "Lax" and ttclid_cookie["httpOnly"] is False
    assert 29 * 86400 < ttclid_cookie["expires"] - time.time() <= 30 * 86400
    assert cookies["_ttgw"]["httpOnly"] is True
    assert cookies["_ttp"]["value"] == TTP
    assert cookies["_ttp"]["expires"] - time.time() > 300 * 86400  # re-set by the server

    # a later page without the click id, and a purchase fired right before navigating away
    landing.click("#next")
    landing.wait_for_url(f"{shop.url}/next")
    landing.wait_for_function("window.ttgw && !window.ttgw.q")
    landing.click("#buy")
    landing.wait_for_url(f"{shop.url}/thanks")
    events = wait_for_events(fake_api, 2)
    purchase = next(e for e in events if e["event"] == "Purchase")
    assert purchase["user"]["ttclid"] == TTCLID  # from the first-party cookie
    assert purchase["user"]["email"] == [EMAIL_HASH]
    assert purchase["page"]["url"] == f"{shop.url}/next"
    assert purchase["page"]["referrer"] == f"{shop.url}/landing?ttclid={TTCLID}&utm_source=tiktok"
    assert purchase["event_id"] != event["event_id"]


def test_server_event_arrives_when_the_pixel_is_blocked(
    shop: Site, fake_api: FakeEventsApi
) -> None:
    blocked: list[str] = []

    def block(route: Any) -> None:
        blocked.append(route.request.url)
        route.abort()

    shop.context.route("**/analytics.tiktok.com/**", block)
    open_page(shop.context, f"{shop.url}/blocked")
    [event] = wait_for_events(fake_api, 1)
    assert blocked, "the page did try to load the TikTok pixel"
    assert event["event"] == "Lead"
    assert event["user"]["email"] == [EMAIL_HASH]
