"""The postback log in the console: each postback, the rules it fired or why not, how its
trigger was found, and what became of its events — over HTTP and in Chromium."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.conftest import PIXEL, TOKEN, USER_AGENT, GatewayServer, wait_until
from tests.redis_proxy import RedisProxy
from tests.test_console import PASSWORD, log_in
from tests.test_postbacks import LMS_KEY, TREE_KEY, config

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
LEAD = "lead-raw-9931"  # sent as external_id by the rules: the log keeps it hashed
PAGE = "https://shop.example/thanks"


@pytest.fixture
def server(serve_gateway: Callable[..., GatewayServer]) -> GatewayServer:
    """The LMS and pingtree sources and rules of the postback tests, and the console."""
    return serve_gateway(**config(), console={"admin_password": PASSWORD})


@pytest.fixture
def console(server: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        log_in(client)
        yield client


def send_postbacks(http: httpx.Client) -> None:
    """One sale (fires), one from a blocked publisher (fires nothing), one mapped status."""
    sold = {"key": LMS_KEY, "trigger": "lead_sold", "lead_id": LEAD, "payout": "37.5"}
    answers = [
        http.get("/v1/postbacks/lms", params={**sold, "publisher": "pub-1", "url": PAGE}),
        http.get("/v1/postbacks/lms", params={**sold, "publisher": "blocked-pub"}),
        http.get(
            "/v1/postbacks/tree",
            params={"key": TREE_KEY, "status": "1", "click_ref": "ref-7", "revenue": "3"},
        ),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]


def test_the_console_lists_postbacks_with_rules_reasons_and_delivery(
    console: httpx.Client,
) -> None:
    send_postbacks(console)

    def sold_delivered() -> bool:
        shown = console.get("/console/postbacks", params={"source": "lms"}).json()
        events = [e for p in shown["postbacks"] for f in p["fired"] for e in f["events"]]
        return any(e["state"] == "delivered" for e in events)

    wait_until(sold_delivered, "the sale's event never showed as delivered")
    answer = console.get("/console/postbacks")
    assert answer.status_code == 200
    shown = answer.json()
    assert shown["sources"] == ["lms", "tree"]
    newest, blocked, sold = shown["postbacks"]
    assert newest["source"] == "tree" and newest["trigger"] == "lead_sold"
    assert newest["trigger_from"] == "status=1"
    assert newest["renamed"] == {"revenue": "price", "click_ref": "lead_id"}
    assert newest["not_fired"] == [
        {"rule": "sold", "reason": "page.url: is required for web events"},
        {"rule": "form", "reason": "trigger: 'lead_sold' is not form_submit"},
    ]

    assert blocked["fired"] == [] and blocked["stored"] == 0
    assert blocked["not_fired"][0]["rule"] == "sold"
    assert "publisher" in blocked["not_fired"][0]["reason"]

    assert sold["trigger_from"] == "given" and sold["stored"] == 1 and sold["ttclid"] == "missing"
    (fired,) = sold["fired"]
    assert fired["rule"] == "sold"
    (event,) = fired["events"]
    assert event["event_id"] == f"{LEAD}-lead_sold" and event["pixel"] == PIXEL
    assert event["state"] == "delivered" and event["code"] == 0
    assert sold["fields"]["lead_id"].endswith("…")  # a digest, shortened
    assert sold["fields"]["price"] == "37.5"  # payout, under our name

    only_tree = console.get("/console/postbacks", params={"source": "tree"}).json()
    assert [p["source"] for p in only_tree["postbacks"]] == ["tree"]
    assert console.get("/console/postbacks", params={"source": "nope"}).status_code == 400
    # the lead id travels in the event id (the rule's template), never as a field
    assert LEAD not in str(sold["fields"]) and TOKEN not in answer.text


def test_the_postback_log_needs_a_session(server: GatewayServer) -> None:
    assert httpx.get(f"{server.url}/console/postbacks").status_code == 401


def test_an_operator_debugs_a_rule_in_chromium(
    browser: Browser, server: GatewayServer, console: httpx.Client
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900}, user_agent=USER_AGENT)
    page = context.new_page()
    page.goto(f"{server.url}/console")
    page.fill("#password", PASSWORD)
    page.click("#login")
    expect(page.locator("#status")).to_have_text("live")
    page.click("nav button[data-tab=postbacks]")
    expect(page.locator("#pb-empty")).to_have_text("No postbacks logged yet.")

    send_postbacks(console)  # shown without a click: the tab refreshes while shown
    rows = page.locator("#postback-log tbody tr")
    expect(rows).to_have_count(3, timeout=5000)
    nothing = page.locator("#postback-log tbody tr.pb-nothing")
    expect(nothing).to_have_count(2)  # the blocked publisher, and the tree's missing page
    expect(nothing.first).to_contain_text("lead_sold (from status=1)")
    expect(nothing.nth(1)).to_contain_text("blocked-pub")
    sold = page.locator("#postback-log tbody tr.pb-fired")
    expect(sold).to_contain_text(f"sold: CompleteRegistration {LEAD}-lead_sold")
    expect(sold).to_contain_text("delivered · code 0", timeout=10_000)

    page.check("#pb-none")
    expect(rows).to_have_count(2)
    page.select_option("#pb-source", "tree")
    expect(rows).to_have_count(1)
    page.uncheck("#pb-none")
    page.select_option("#pb-source", "")
    expect(rows).to_have_count(3)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-postbacks.png"), full_page=True)

    sold.locator("a.pb-event").click()  # to the event's detail in the live view
    expect(page.locator("#live")).to_be_visible()
    expect(page.locator("#detail")).to_contain_text(f"{LEAD}-lead_sold")
    expect(page.locator("#detail")).to_contain_text("TikTok's response")
    assert TOKEN not in page.content()
    context.close()


@pytest.mark.parametrize(
    ("fields", "trigger", "found"),
    [
        ({"trigger": "lead_sold"}, "lead_sold", "given"),
        ({"state": "1", "trigger": "lead_sold"}, "lead_sold", "st=1"),  # their name, our value
        ({"state": "2", "trigger": "lead_sold"}, "lead_sold", "given"),  # 2 maps to nothing
        ({"state": "1"}, None, "absent"),
    ],
)
def test_where_a_trigger_came_from(fields: dict[str, str], trigger: str | None, found: str) -> None:
    from gateway.console.postbacks import trigger_from
    from gateway.core.secret import Secret
    from gateway.settings import PostbackSource

    source = PostbackSource(
        "tracker", Secret("s" * 16), {"st": "state"}, {"state": {"1": "lead_sold"}}
    )
    assert trigger_from(source, {"trigger": trigger, "fields": fields}) == found


def test_the_console_answers_503_while_redis_is_down(
    serve_gateway: Callable[..., GatewayServer], redis_url: str
) -> None:
    """As `/readyz` says it: the page can tell "Redis is down" from a bug, and retry."""
    proxy = RedisProxy(redis_url)
    server = serve_gateway(
        **config(),
        console={"admin_password": PASSWORD},
        outbox={"url": proxy.url},
        delivery={"separate_process": False},
    )
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            log_in(client)
            assert client.get("/console/postbacks").status_code == 200  # the sentinel: up
            proxy.down()
            for path in ("/console/postbacks", "/console/overview", "/console/dead-letters"):
                answer = client.get(path)
                assert answer.status_code == 503, (path, answer.text)
                assert answer.json()["error"] == "unavailable"
                assert answer.headers["retry-after"]
            proxy.up()
            wait_until(
                lambda: client.get("/console/postbacks").status_code == 200,
                "the postback view did not come back with Redis",
            )
    finally:
        proxy.up()
        server.stop()  # before the proxy goes
        proxy.close()
