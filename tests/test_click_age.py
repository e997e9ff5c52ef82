"""A click's age is the click's own: over a timeline of visits with a moved clock, a click id
older than the attribution window reaches TikTok from no source, however recently its lead
was identified; one within the window still does (issue 22, point 1)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.fake_api import FakeEventsApi
from gateway.runtime import Gateway
from tests.conftest import PIXEL, TOKEN, GatewayServer, SettingsFactory, wait_until
from tests.test_postbacks import API_KEY, CHROME, LMS_KEY, SHOP, TTP, config

DAY = 86400.0
OLD_CLICK = "E.C.P.oldclick"


class Clock:
    """The gateway's wall clock, moved by the test. Day 20 is the real now: the delivery
    process keeps the real clock, and events from day 20 on are not too old for it."""

    def __init__(self) -> None:
        self.start = self.now = time.time() - 20 * DAY

    def __call__(self) -> float:
        return self.now

    def day(self, number: float) -> None:
        self.now = self.start + number * DAY


class Timeline:
    """One browser (its cookie jar), the lead system and TikTok around a gateway whose
    clock the test moves."""

    def __init__(self, server: GatewayServer, fake: FakeEventsApi, clock: Clock) -> None:
        self.server, self.fake, self.clock = server, fake, clock
        self.http = httpx.Client(base_url=server.url, timeout=10)
        self.jar: dict[str, tuple[str, float]] = {"_ttp": (TTP, clock.now + 400 * DAY)}

    def day(self, number: float) -> None:
        """Move the clock, once what the browser left is stored (as it would be long before
        a day passes: the store writes its queue in the background)."""
        assert self.server.gateway is not None
        self.server.call(self.server.gateway.leads.store.flush())
        self.clock.day(number)

    def beacon(self, event_id: str, url: str, *, external_id: str | None = None) -> list[str]:
        """A page's beacon with the browser's cookies; keeps what the answer sets."""
        body: dict[str, Any] = {"event": "ViewContent", "event_id": event_id, "page": {"url": url}}
        if external_id:
            body["user"] = {"external_id": external_id}
        headers = {
            "Origin": SHOP,
            "Content-Type": "text/plain",
            "User-Agent": CHROME,
            "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies().items()),
        }
        response = self.http.post("/b", content=json.dumps(body), headers=headers)
        self.http.cookies.clear()  # the jar above is the browser's
        assert response.status_code == 204 and response.headers["x-accepted"] == "1"
        set_cookies = response.headers.get_list("set-cookie")
        for line in set_cookies:
            pair, *attributes = line.split(";")
            name, _, value = pair.partition("=")
            max_age = next(int(a.split("=")[1]) for a in attributes if "Max-Age" in a)
            self.jar[name] = (value, self.clock.now + max_age)
        return set_cookies

    def cookies(self) -> dict[str, str]:
        """What the browser still sends: a cookie past its Max-Age is gone."""
        return {k: value for k, (value, until) in self.jar.items() if until > self.clock.now}

    def postback(self, lead_id: str, trigger: str = "lead_sold", **extra: str) -> dict[str, Any]:
        params = {
            "key": LMS_KEY,
            "trigger": trigger,
            "lead_id": lead_id,
            "payout": "40",
            "publisher": "p1",
            **extra,
        }
        answer = self.http.get("/v1/postbacks/lms", params=params)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        assert body["stored"] == 1, body
        return body

    def server_event(self, event_id: str, lead_id: str) -> None:
        event = {"event": "Purchase", "event_id": event_id, "user": {"external_id": lead_id}}
        headers = {"Authorization": f"Bearer {API_KEY}"}
        answer = self.http.post("/v1/events", json=event, headers=headers)
        assert answer.status_code == 202, answer.text

    def relayed_event(self, event_id: str, lead_id: str) -> None:
        event = {
            "event": "CompletePayment",
            "event_id": event_id,
            "event_time": int(self.clock.now),
            "user": {"external_id": lead_id},
        }
        body = {"event_source": "web", "event_source_id": PIXEL, "data": [event]}
        answer = self.http.post(
            "/open_api/v1.3/event/track/", json=body, headers={"Access-Token": TOKEN}
        )
        assert answer.json()["code"] == 0, answer.text

    def imported_row(self, event_id: str, lead_id: str) -> None:
        rows = f"external_id,event,event_id,timestamp\n{lead_id},Purchase,{event_id},"
        answer = self.http.post(
            "/v1/imports",
            params={"pixel": PIXEL},
            content=f"{rows}{int(self.clock.now)}\n",
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "text/csv"},
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["summary"]["lead_context_filled"] == 1

    def delivered(self, event_id: str) -> dict[str, Any]:
        def found() -> list[dict[str, Any]]:
            return [e for e in self.fake.accepted_events() if e["event_id"] == event_id]

        wait_until(lambda: bool(found()), f"{event_id} not delivered", within=10)
        return found()[-1]


@pytest.fixture
def timeline(
    make_settings: SettingsFactory, fake_api: FakeEventsApi, tmp_path: Any
) -> Iterator[Timeline]:
    clock = Clock()
    toml = config()
    toml["outbox"] = {"url": f"sqlite:///{tmp_path}/outbox.sqlite3"}
    toml["delivery"] = {"linger_ms": 0}
    gateway = Gateway(make_settings(**toml), clock=clock)
    server = GatewayServer(create_app(gateway), gateway=gateway).start()
    made = Timeline(server, fake_api, clock)
    yield made
    made.http.close()
    server.stop()


def landing_then_identified(timeline: Timeline, identified_on: float) -> None:
    """Day 0: the ad's landing page, no identity; later the same browser, the click id
    restored from its cookies, is identified as lead L-OLD."""
    timeline.clock.day(0)
    set_cookies = timeline.beacon("land-0", f"{SHOP}/landing?ttclid={OLD_CLICK}")
    assert any(c.startswith(f"_ttgw={OLD_CLICK}:{int(timeline.clock.now)}:") for c in set_cookies)
    timeline.day(identified_on)
    timeline.beacon("apply", f"{SHOP}/apply", external_id="L-OLD")
    assert timeline.delivered("apply")["user"]["ttclid"] == OLD_CLICK  # within its window


def test_a_click_older_than_the_window_is_expired_though_its_lead_was_identified_later(
    timeline: Timeline,
) -> None:
    """The issue's timeline: the lead was identified on day 20, but its click is of day 0,
    so on day 35 no source sends it."""
    landing_then_identified(timeline, identified_on=20)
    timeline.day(35)
    answer = timeline.postback("L-OLD")
    assert answer["ttclid"] == "expired"
    sold = timeline.delivered("L-OLD-lead_sold")
    assert "ttclid" not in sold["user"]
    assert sold["user"]["ttp"] == TTP  # the rest of the context is still the lead's
    timeline.server_event("server-35", "L-OLD")
    timeline.relayed_event("relay-35", "L-OLD")
    timeline.imported_row("import-35", "L-OLD")
    for event_id in ("server-35", "relay-35", "import-35"):
        event = timeline.delivered(event_id)
        assert "ttclid" not in event["user"] and event["user"]["ttp"] == TTP, event_id


def test_a_click_within_the_window_is_still_sent_by_every_source(timeline: Timeline) -> None:
    landing_then_identified(timeline, identified_on=20)
    timeline.day(27)
    assert timeline.postback("L-OLD")["ttclid"] == "context"
    assert timeline.delivered("L-OLD-lead_sold")["user"]["ttclid"] == OLD_CLICK
    timeline.server_event("server-27", "L-OLD")
    timeline.relayed_event("relay-27", "L-OLD")
    timeline.imported_row("import-27", "L-OLD")
    for event_id in ("server-27", "relay-27", "import-27"):
        assert timeline.delivered(event_id)["user"]["ttclid"] == OLD_CLICK, event_id


def test_control_click_and_identify_on_day_0(timeline: Timeline) -> None:
    """The control: the click and the identity in one visit on day 0. On day 27 the click
    is sent; on day 35 it is not — the lead's entry itself is kept `context_days` after its
    last visit, so here the lead is no longer known at all (`missing`), where a later visit
    (the test above) keeps the lead known and the click `expired`."""
    timeline.clock.day(0)
    timeline.beacon("land-0", f"{SHOP}/landing?ttclid={OLD_CLICK}", external_id="L-ONE")
    timeline.day(27)
    assert timeline.postback("L-ONE")["ttclid"] == "context"
    assert timeline.delivered("L-ONE-lead_sold")["user"]["ttclid"] == OLD_CLICK
    timeline.day(35)
    answer = timeline.postback("L-ONE", "form_submit", url=f"{SHOP}/crm")
    assert answer["ttclid"] == "missing"
    assert "ttclid" not in timeline.delivered("L-ONE-form")["user"]


def test_a_ttclid_cookie_never_outlives_the_signed_record_of_its_clicks_time(
    timeline: Timeline,
) -> None:
    """The `ttclid` cookie lives 30 days, the window 28: were the signed record to go first,
    the old click would come back from the plain cookie as a new one."""
    timeline.clock.day(0)
    timeline.beacon("land-0", f"{SHOP}/landing?ttclid={OLD_CLICK}")
    timeline.day(20)
    timeline.beacon("browse-20", f"{SHOP}/faq")  # `_ttp` re-set, and so the record
    timeline.day(29)
    assert timeline.cookies()["ttclid"] == OLD_CLICK  # the browser still sends it…
    assert timeline.cookies()["_ttgw"].startswith(f"{OLD_CLICK}:{int(timeline.clock.start)}:")
    timeline.beacon("apply-29", f"{SHOP}/apply", external_id="L-LATE")
    assert "ttclid" not in timeline.delivered("apply-29")["user"]  # …but it is 29 days old
    timeline.day(30)
    answer = timeline.postback("L-LATE", "form_submit")
    assert answer["ttclid"] == "missing"
    assert "ttclid" not in timeline.delivered("L-LATE-form")["user"]
