"""The console's search answers "what happened to event_id X / order_id Y" from every place
an event is kept: the recent buffer (delivered), the outbox (waiting, dead-lettered) and the
recent drops."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from gateway.fake_api import FakeEventsApi, Fault
from tests.conftest import PIXEL, wait_until
from tests.test_drops import HEADLESS, PAGE, Site, make_site

__all__ = ["make_site"]  # the fixture, shared with tests/test_drops.py


def test_the_search_finds_delivered_waiting_dead_and_dropped_events(
    make_site: Callable[..., Site], fake_api: FakeEventsApi
) -> None:
    site = make_site()
    sent = site.server_event({"event": "Purchase", "event_id": "p-1"})
    assert sent.status_code == 202
    wait_until(lambda: len(fake_api.accepted_events()) == 1, "the purchase was not delivered")
    wait_until(
        lambda: any(f.get("state") == "delivered" for f in site.search("p-1")),
        "the search does not say it was delivered",
    )
    assert [(f["where"], f["event_id"]) for f in site.search("p-1")] == [("recent", "p-1")]

    fake_api.add_fault(Fault(code=40002, message="invalid event", pixel=PIXEL, times=None))
    assert site.server_event({"event": "Lead", "event_id": "dead-1"}).status_code == 202
    wait_until(  # found in the outbox while pending too: wait for what delivery made of it
        lambda: any(f.get("state") == "dead_lettered" for f in site.search("dead-1")),
        "the dead letter is not found",
    )
    stored = [f for f in site.search("dead-1") if f["where"] == "outbox"]
    assert stored[0]["state"] == "dead_lettered" and stored[0]["code"] == 40002

    fake_api.clear_faults()
    fake_api.add_fault(Fault(status=503, pixel=PIXEL, times=None))
    order = {"value": 5, "currency": "EUR", "order_id": "order-77"}
    waiting = {"event": "Purchase", "event_id": "wait-1", "properties": order}
    assert site.server_event(waiting).status_code == 202
    wait_until(
        lambda: any(f.get("state") == "retrying" for f in site.search("order-77")),
        "the retrying event is not found by its order_id",
    )
    assert {f["event_id"] for f in site.search("order-77")} == {"wait-1"}

    site.beacon({"event": "Lead", "event_id": "bot-9", "page": PAGE}, agent=HEADLESS)
    dropped = site.search("bot-9")
    assert [(f["where"], f["why"]) for f in dropped] == [("dropped", "bot: headless")]
    assert site.search("nothing-like-it") == []
    assert site.http.get("/console/search", params={"q": ""}).status_code == 400
    assert site.http.get("/console/search", params={"q": "x" * 200}).status_code == 400
    assert httpx.get(f"{site.server.url}/console/search?q=p-1").status_code == 401
