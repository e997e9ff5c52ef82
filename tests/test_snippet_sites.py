"""The snippet on sites as they are, in a real headless Chromium (issue 14).

A test shop pushes GA4 ecommerce events into `window.dataLayer` the way store themes and tag
managers do (objects, and gtag's `arguments`), declares consent with Google Consent Mode,
has lead forms and client-side routes. A stand-in `ttq` records what the pixel would have
received; the fake Events API shows what the gateway delivered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from playwright.sync_api import Page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

from gateway.core.event_names import BUILTIN_MAP, EventNameMapper
from gateway.fake_api import FakeEventsApi
from gateway.ingest.sources.beacon.snippet import STUB
from tests.conftest import Site, open_page, wait_for_events, wait_until

EMAIL_HASH = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"
MUG = (
    '{item_id: "SKU_1", item_name: "Mug", item_category: "Kitchen", item_brand: "Acme", '
    "price: 9.5, quantity: 1}"
)
TEA = '{item_id: 2002, item_name: "Tea", price: "10.00", quantity: 2}'
PURCHASE = f'{{transaction_id: "T-1001", currency: "EUR", value: 29.5, items: [{MUG}, {TEA}]}}'

PIXEL_STAND_IN = """<script>
  window.pixelCalls = []; window.consentCalls = []; window.errors = [];
  window.addEventListener("error", function (e) { window.errors.push(String(e.message)); });
  window.ttq = {
    track: function (name, params, options) {
      window.pixelCalls.push({name: name, params: params, options: options}); },
    grantConsent: function () { window.consentCalls.push("grant"); },
    revokeConsent: function () { window.consentCalls.push("revoke"); }};
  window.dataLayer = window.dataLayer || [];
  function gtag() { dataLayer.push(arguments); }
</script>"""

GA4_THEME = f"""<script>
  // another listener wraps push before the snippet, as GTM does
  window.seenByOther = 0;
  (function () {{ var push = dataLayer.push; dataLayer.push = function () {{
    window.seenByOther += arguments.length; return push.apply(dataLayer, arguments); }}; }})();
  // pushed before the snippet loads
  dataLayer.push({{ecommerce: null}});
  dataLayer.push({{event: "view_item",
    ecommerce: {{currency: "EUR", value: 9.5, items: [{MUG}]}}}});
</script>"""

GA4_BODY = f"""
<button id="add" onclick='dataLayer.push({{ecommerce: null}}); dataLayer.push({{
  event: "add_to_cart", ecommerce: {{currency: "EUR", value: 29.5, items: [{MUG}, {TEA}]}}}})'>
  add</button>
<button id="buy" onclick='
  dataLayer.push({{ecommerce: null}});
  dataLayer.push({{event: "purchase", ecommerce: {PURCHASE},
                   user_data: {{email: " ALICE_abc@gmail.com "}}}});
  gtag("event", "purchase", {PURCHASE});
  ttgw.track("purchase", {{order_id: "T-1001", value: 29.5, currency: "EUR"}})'>buy</button>
<button id="lead" onclick='gtag("event", "generate_lead", {{currency: "EUR", value: 1}})'>
  lead</button>"""

CONSENT_HEAD = f"""<script>
  gtag("consent", "default", {{ad_storage: "denied", ad_user_data: "denied",
    ad_personalization: "denied", analytics_storage: "denied"}});
  dataLayer.push({{event: "view_item", ecommerce: {{currency: "EUR", value: 9.5,
    items: [{MUG}]}}}});
</script>"""

LEAD_BODY = """<iframe name="sink"></iframe>
<form id="at-load" action="/leads" method="post" target="sink">
  <input name="email" value="lead@example.com"><button>send</button></form>
<button id="add-form">add a form</button>
<script>
  ttgw.config({forms: new URLSearchParams(location.search).get("field") || true});
  document.getElementById("add-form").onclick = function () {
    var form = document.createElement("form");
    form.id = "later"; form.action = "/leads"; form.method = "post"; form.target = "sink";
    form.innerHTML = '<input name="email" value="later@example.com"><button>send</button>';
    document.body.appendChild(form);
  };
</script>"""

SPA_BODY = """<button id="offer"
  onclick="history.pushState({}, '', '/app/offer?ttclid=E.C.P.spaclick')">offer</button>
<button id="product" onclick="history.pushState({}, '', '/app/product')">product</button>
<button id="cart" onclick="history.pushState({}, '', '/app/cart');
  ttgw.track('add_to_cart', {value: 5, currency: 'EUR'})">cart</button>"""


def site_app(gateway_url: str) -> Starlette:
    """The test shop: each page has the stand-in pixel, the queue stub and the snippet."""
    leads: list[dict[str, str]] = []

    def page(body: str, head: str = "", attributes: str = "") -> HTMLResponse:
        return HTMLResponse(
            f"""<!doctype html><html><head><meta charset="utf-8">{PIXEL_STAND_IN}
{head}
{STUB}
<script async src="{gateway_url}/gw.js"{attributes}></script>
</head><body>{body}</body></html>"""
        )

    async def product(request: Request) -> HTMLResponse:
        return page(GA4_BODY, GA4_THEME, " data-datalayer")

    async def consent(request: Request) -> HTMLResponse:
        return page(GA4_BODY, CONSENT_HEAD, " data-datalayer")

    async def lead(request: Request) -> HTMLResponse:
        return page(LEAD_BODY)

    async def receive_lead(request: Request) -> PlainTextResponse:
        leads.append(dict(parse_qsl((await request.body()).decode())))
        return PlainTextResponse("thanks")

    async def app(request: Request) -> HTMLResponse:
        return page(SPA_BODY)

    shop = Starlette(
        routes=[
            Route("/product", product),
            Route("/consent", consent),
            Route("/lead", lead),
            Route("/leads", receive_lead, methods=["POST"]),
            Route("/app/{rest:path}", app),
        ]
    )
    shop.state.leads = leads
    return shop


@pytest.fixture
def site(make_site: Callable[[Callable[[str], Starlette]], Site]) -> Site:
    return make_site(site_app)


def by_name(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for event in events:
        assert event["event"] not in found, f"{event['event']} arrived twice"
        found[event["event"]] = event
    return found


def page_errors(page: Page) -> list[str]:
    errors: list[str] = page.evaluate("window.errors")
    return errors


def test_ga4_ecommerce_events_reach_tiktok_with_the_pixels_event_ids(
    site: Site, fake_api: FakeEventsApi
) -> None:
    page = open_page(site.context, f"{site.url}/product")
    # a listener that wraps push after the snippet keeps working, and the snippet still sees
    page.evaluate("""() => { var push = dataLayer.push; window.seenAfter = 0;
      dataLayer.push = function () { window.seenAfter += arguments.length;
        return push.apply(dataLayer, arguments); }; }""")
    page.click("#add")
    page.click("#buy")
    # what a real dataLayer also carries: tag manager events, odd values, a hostile getter
    returned = page.evaluate("""() => dataLayer.push(null, 42, "text", {event: "gtm.click"},
      {event: "add_to_cart", get user_data() { throw new Error("boom"); }})""")
    assert returned == page.evaluate("dataLayer.length")
    page.click("#lead")  # the last event: once it arrives, every earlier one has
    events = by_name(wait_for_events(fake_api, 4))
    assert set(events) == {"ViewContent", "AddToCart", "Purchase", "Lead"}

    mug = {
        "content_id": "SKU_1",
        "content_name": "Mug",
        "content_category": "Kitchen",
        "brand": "Acme",
        "price": 9.5,
        "quantity": 1,
    }
    tea = {"content_id": "2002", "content_name": "Tea", "price": 10.0, "quantity": 2}
    view = events["ViewContent"]["properties"]
    assert view == {"content_type": "product", "contents": [mug], "value": 9.5, "currency": "EUR"}
    cart = events["AddToCart"]["properties"]
    assert cart["contents"] == [mug, tea] and (cart["value"], cart["currency"]) == (29.5, "EUR")
    purchase = events["Purchase"]
    assert purchase["properties"]["order_id"] == "T-1001"
    assert purchase["properties"]["contents"] == [mug, tea]
    assert (purchase["properties"]["value"], purchase["properties"]["currency"]) == (29.5, "EUR")
    assert purchase["user"]["email"] == [EMAIL_HASH]

    pixel_calls = page.evaluate("window.pixelCalls")
    assert [c["name"] for c in pixel_calls] == ["ViewContent", "AddToCart", "Purchase", "Lead"]
    for call in pixel_calls:
        assert call["options"]["event_id"] == events[call["name"]]["event_id"]
        assert "user_data" not in str(call) and "ALICE" not in str(call)  # only to the gateway
    counts = page.evaluate("[window.seenByOther, window.seenAfter, dataLayer.length]")
    assert counts[0] == counts[2] and counts[1] > 0
    assert page_errors(page) == []


def metric(site: Site, reason: str) -> float:
    text = httpx.get(site.gateway.metrics_url).text
    prefix = f'tiktok_gateway_events_dropped_total{{reason="{reason}"}} '
    line = next((line for line in text.splitlines() if line.startswith(prefix)), prefix + "0")
    return float(line.removeprefix(prefix))


def test_consent_mode_denied_then_granted_sends_only_what_follows_the_grant(
    site: Site, fake_api: FakeEventsApi
) -> None:
    page = open_page(site.context, f"{site.url}/consent?ttclid=E.C.P.consentclick")
    # a default for some regions only cannot grant: the snippet does not know the region
    page.evaluate("""() => gtag("consent", "default", {ad_storage: "granted",
      ad_user_data: "granted", region: ["US"]})""")
    page.click("#add")
    # the view_item pushed before the snippet and this add_to_cart: both refused
    wait_until(lambda: metric(site, "no_consent") == 2, "two events dropped without consent")
    assert {c["name"] for c in site.context.cookies()}.isdisjoint({"ttclid", "_ttgw", "_ttp"})
    assert "grant" not in page.evaluate("window.consentCalls")

    page.evaluate("""() => gtag("consent", "update", {ad_storage: "granted",
      ad_user_data: "granted", ad_personalization: "denied"})""")
    page.click("#buy")
    [purchase] = wait_for_events(fake_api, 1)
    assert purchase["event"] == "Purchase"
    assert purchase["user"]["ttclid"] == "E.C.P.consentclick"
    assert purchase["limited_data_use"] is True  # ad_personalization denied
    assert page.evaluate("window.consentCalls").pop() == "grant"
    assert {c["name"]: c["value"] for c in site.context.cookies()}["ttclid"] == (
        "E.C.P.consentclick"
    )
    assert metric(site, "no_consent") == 2
    assert page_errors(page) == []


def submitted(site: Site, count: int) -> list[dict[str, str]]:
    leads: list[dict[str, str]] = site.server.app.state.leads
    wait_until(lambda: len(leads) >= count, f"{count} leads")
    return leads


def test_lead_forms_carry_the_click_id_of_the_landing_url(site: Site) -> None:
    page = open_page(site.context, f"{site.url}/lead?ttclid=E.C.P.leadclick")
    page.click("#at-load button")
    submitted(site, 1)
    page.click("#add-form")
    page.click("#later button")
    leads = submitted(site, 2)
    assert leads == [
        {"email": "lead@example.com", "ttclid": "E.C.P.leadclick"},
        {"email": "later@example.com", "ttclid": "E.C.P.leadclick"},
    ]
    assert page_errors(page) == []


def test_lead_forms_fall_back_to_the_cookie_under_a_configured_name(site: Site) -> None:
    site.context.add_cookies([{"name": "ttclid", "value": "E.C.P.cookieclick", "url": site.url}])
    page = open_page(site.context, f"{site.url}/lead?field=tt_click")
    page.click("#at-load button")
    assert submitted(site, 1) == [{"email": "lead@example.com", "tt_click": "E.C.P.cookieclick"}]


def test_single_page_app_route_changes_set_the_page_and_capture_the_click_id(
    site: Site, fake_api: FakeEventsApi
) -> None:
    page = open_page(site.context, f"{site.url}/app/")
    page.click("#offer")
    page.click("#product")
    page.click("#cart")
    [cart] = wait_for_events(fake_api, 1)
    assert cart["page"] == {"url": f"{site.url}/app/cart", "referrer": f"{site.url}/app/product"}
    assert cart["user"]["ttclid"] == "E.C.P.spaclick"
    cookies = {c["name"]: c["value"] for c in site.context.cookies()}
    assert cookies["ttclid"] == "E.C.P.spaclick"

    page.go_back()  # popstate
    page.evaluate("ttgw.track('view_content')")
    back = wait_for_events(fake_api, 2)[1]
    assert back["page"] == {"url": f"{site.url}/app/product", "referrer": f"{site.url}/app/cart"}

    later = open_page(site.context, f"{site.url}/app/thanks")  # a full page load, no click id
    later.evaluate("ttgw.track('purchase', {value: 5, currency: 'EUR'})")
    purchase = wait_for_events(fake_api, 3)[2]
    assert purchase["page"]["url"] == f"{site.url}/app/thanks"
    assert purchase["user"]["ttclid"] == "E.C.P.spaclick"  # from the first-party cookie
    assert page_errors(page) == []


def test_the_pixel_is_told_the_servers_name_for_every_name(site: Site) -> None:
    """The snippet resolves names with the map the server rendered into it, in real JS."""
    page = open_page(site.context, f"{site.url}/app/")
    inputs = [*BUILTIN_MAP, "Purchase", "PURCHASE", "Add_To_Cart", "CompletePayment", "my_event"]
    inputs += ["constructor", "toString"]  # names an object literal also answers to
    ids = page.evaluate("names => names.map(name => ttgw.track(name))", inputs)
    told: dict[str, list[str]] = {}
    for call in page.evaluate("window.pixelCalls"):
        told.setdefault(call["options"]["event_id"], []).append(call["name"])
    assert site.gateway.gateway is not None
    server = EventNameMapper(site.gateway.gateway.settings.event_names, strict=False)
    for name, event_id in zip(inputs, ids, strict=True):
        assert tuple(told[event_id]) == server.map(name), name
