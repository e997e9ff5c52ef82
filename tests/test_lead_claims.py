"""What a stranger's beacon can and cannot do to the lead context, over real HTTP (issue 21,
point 4): claim a lead another visitor showed, leave dozens of keys at once, or fill the
store from one address. The threat model: docs/design/lead-context.md."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.fake_api import FakeEventsApi
from tests.conftest import GatewayServer
from tests.test_postbacks import API_KEY, CHROME, LMS_KEY, SHOP, Lead, config

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
VICTIM_CLICK = "E.C.P.victim-click"
ATTACKER_CLICK = "E.C.P.ATTACKERCLICK"


class Browser:
    """One visitor: keeps the gateway's signed cookie between its beacons, as a browser does."""

    def __init__(self, lead: Lead, *, address: str = "127.0.0.1", agent: str = CHROME) -> None:
        self.http, self.address, self.agent = lead.http, address, agent
        self.cookies: dict[str, str] = {}

    def beacon(self, user: dict[str, Any], url: str, **properties: Any) -> httpx.Response:
        body = {"event": "ViewContent", "page": {"url": url}, "user": user}
        if properties:
            body["properties"] = properties
        headers = {
            "Origin": SHOP,
            "Content-Type": "text/plain",
            "User-Agent": self.agent,
            "X-Forwarded-For": self.address,
            "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
        }
        answer = self.http.post("/b", content=json.dumps(body), headers=headers)
        assert answer.status_code == 204 and answer.headers["x-accepted"] == "1", answer.text
        for line in answer.headers.get_list("set-cookie"):
            name, _, rest = line.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return answer


@pytest.fixture
def lead(serve_gateway: Callable[..., GatewayServer], fake_api: FakeEventsApi) -> Iterator[Lead]:
    settings = config()
    settings["browser"] = {"trusted_proxies": ["127.0.0.0/8"]}
    settings["postbacks"]["context_new_per_minute"] = 5
    made = Lead(serve_gateway(**settings), fake_api)
    yield made
    made.http.close()


def postback(lead: Lead, lead_id: str, trigger: str = "lead_sold") -> dict[str, Any]:
    params = {"key": LMS_KEY, "trigger": trigger, "lead_id": lead_id, "payout": "10"}
    answer = lead.http.get("/v1/postbacks/lms", params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def metric(lead: Lead, line: str) -> float:
    for row in httpx.get(lead.server.metrics_url).text.splitlines():
        if row.startswith(line + " "):
            return float(row.rsplit(" ", 1)[1])
    raise AssertionError(f"{line} not in /metrics")


def test_a_lead_written_by_one_visitor_keeps_its_click_when_another_claims_it(
    lead: Lead,
) -> None:
    """The attack of the issue: a beacon naming the victim's lead and order with the
    attacker's click id. The lead system's postback and the shop's Purchase still carry the
    victim's click, IP and user agent; the victim's own next page refreshes the entry."""
    victim = Browser(lead, address="198.51.100.7")
    victim.beacon(
        {"external_id": "L-1001"}, f"{SHOP}/landing?ttclid={VICTIM_CLICK}", order_id="1002"
    )
    attacker = Browser(lead, address="203.0.113.66", agent=FIREFOX)
    for _ in range(2):  # without a cookie, then with the one it was given
        attacker.beacon(
            {"external_id": ["L-1001", "L-1002"]},
            f"{SHOP}/?ttclid={ATTACKER_CLICK}",
            order_id="1002",
        )
    victim.beacon({"external_id": "L-1001"}, f"{SHOP}/thank-you")

    assert postback(lead, "L-1001")["ttclid"] == "context"
    sold = lead.delivered_event("L-1001-lead_sold")
    assert sold["user"]["ttclid"] == VICTIM_CLICK
    assert (sold["user"]["ip"], sold["user"]["user_agent"]) == ("198.51.100.7", CHROME)
    assert sold["page"]["url"] == f"{SHOP}/thank-you"  # the victim's later page
    purchase = {"event": "Purchase", "event_id": "order-1002", "properties": {"order_id": "1002"}}
    answer = lead.http.post(
        "/v1/events", json=purchase, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert answer.status_code == 202, answer.text
    assert lead.delivered_event("order-1002")["user"]["ttclid"] == VICTIM_CLICK
    # the victim's two keys, refused once or twice: the attacker's two beacons may merge in
    # the queue before they reach the store, as one visitor's writes
    assert metric(lead, "tiktok_gateway_lead_context_refused_total") in (2, 4)


def test_a_beacon_leaves_at_most_four_identity_keys(lead: Lead) -> None:
    ids = [f"L-20{n}" for n in range(8)]
    Browser(lead).beacon({"external_id": ids}, f"{SHOP}/?ttclid={VICTIM_CLICK}")
    assert [postback(lead, i, "form_submit")["ttclid"] for i in ids] == ["context"] * 4 + [
        "missing"
    ] * 4
    keys = 'tiktok_gateway_lead_context_browser_keys_total{outcome="%s"}'
    assert metric(lead, keys % "remembered") == 4
    assert metric(lead, keys % "beyond_bound") == 4


def test_one_address_leaves_a_bounded_number_of_new_keys_per_minute(lead: Lead) -> None:
    """Five new keys a minute here (`context_new_per_minute`): a sixth lead from the same
    address is not remembered, a visitor refreshing its own lead is not charged, and
    another address is not held back."""
    flooder = Browser(lead, address="203.0.113.9")
    for number in range(6):
        flooder.beacon({"external_id": f"L-30{number}"}, f"{SHOP}/?ttclid={ATTACKER_CLICK}")
    flooder.beacon({"external_id": "L-300"}, f"{SHOP}/again")
    Browser(lead, address="198.51.100.8").beacon({"external_id": "L-400"}, f"{SHOP}/")
    found = [postback(lead, f"L-30{n}", "form_submit")["ttclid"] for n in range(6)]
    assert found == ["context"] * 5 + ["missing"]
    assert postback(lead, "L-400", "form_submit")["ttclid"] == "missing"  # no click, but found
    keys = 'tiktok_gateway_lead_context_browser_keys_total{outcome="%s"}'
    assert metric(lead, keys % "rate_limited") == 1
    assert metric(lead, keys % "remembered") == 7
    assert metric(lead, "tiktok_gateway_lead_context_hits_total") == 6
