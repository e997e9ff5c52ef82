"""Emails and phone numbers planted in every URL part and free-text field of a beacon and of
a `/v1/events` request reach neither TikTok nor the outbox file raw (issue 13, item 6)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gateway.fake_api import FakeEventsApi
from tests.conftest import PIXEL, TOKEN, GatewayServer, wait_for_events

SHOP = "http://shop.test"
API_KEY = "server-key-0123456789"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
# each planted address starts with a unique word (`zqpath`…), so finding it means a leak
EMAILS = {name: f"zq{name}.planted@example.com" for name in (
    "path", "key", "value", "fragment", "userinfo", "twice", "plus", "referrer",
    "description", "search", "order", "contentname", "contentid", "custom", "customkey",
    "lead", "agent", "city", "localhost",
)}  # fmt: skip
PHONES = ["+49 151 2345 6789", "+4915723456789", "(415) 555-0142", "0161 496 0753"]
LEAKS = [
    *(f"zq{name}" for name in EMAILS),
    *PHONES,
    *("".join(c for c in phone if c.isdigit()) for phone in PHONES),
    "Jane Planted",
    "Jane+Planted",
]


def page() -> dict[str, str]:
    e = EMAILS
    url = (
        f"http://{e['userinfo'].replace('@', '%40')}:pw@shop.test/account/{e['path']}/orders"
        f"?{e['key']}=1&contact={e['value']}&u={e['twice'].replace('@', '%2540')}"
        f"&to={e['plus'].replace('.planted', '+planted')}"
        f"&u2={e['localhost'].split('@')[0]}@localhost"
        f"&phone={PHONES[0].replace(' ', '+')}&name=Jane+Planted&q={PHONES[3].replace(' ', '+')}"
        f"&ttclid=E.C.P.planted#/thanks?ref={e['fragment']}"
    )
    return {"url": url, "referrer": f"http://mail.test/inbox/{e['referrer']}/?from={PHONES[1]}"}


def event(event_id: str) -> dict[str, Any]:
    e = EMAILS
    return {
        "event": "Purchase",
        "event_id": event_id,
        "page": page(),
        "properties": {
            "currency": "USD",
            "value": 10,
            "description": f"Gift for {e['description']}, call {PHONES[2]}",
            "search_string": f"{e['search']} {PHONES[3]}",
            "order_id": e["order"],
            "contents": [{"content_id": e["contentid"], "content_name": e["contentname"]}],
            "note": f"{e['custom']} or {PHONES[1]}",
            e["customkey"]: "yes",
        },
        "lead": {"lead_id": e["lead"]},
    }


def test_nothing_planted_reaches_tiktok_or_the_outbox_file(
    serve_gateway: Callable[..., GatewayServer], fake_api: FakeEventsApi, tmp_path: Path
) -> None:
    server = serve_gateway(
        pixels=[{"id": PIXEL, "access_token": TOKEN, "origins": [SHOP]}],
        server_api={"api_keys": [API_KEY]},
    )
    beacon = httpx.post(
        f"{server.url}/b",
        content=json.dumps(event("planted-beacon")),
        headers={"Content-Type": "text/plain", "Origin": SHOP, "User-Agent": CHROME},
    )
    assert beacon.status_code == 204, beacon.text
    server_event = event("planted-server")
    server_event["user"] = {"user_agent": f"Agent ({EMAILS['agent']})", "city": EMAILS["city"]}
    posted = httpx.post(
        f"{server.url}/v1/events",
        json={"events": [server_event]},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert posted.status_code == 202, posted.text

    wait_for_events(fake_api, 2, 10)
    sent = json.dumps([r.body for r in fake_api.requests])
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("outbox-0.sqlite3*"))
    assert "planted-beacon" in sent and b"planted-server" in stored  # the sentinels are there
    assert "E.C.P.planted" in sent  # the click id is not personal data: it must survive
    for leak in LEAKS:
        assert leak not in sent, leak
        assert leak.encode() not in stored, leak
    assert server.gateway is not None
    metrics = server.gateway.metrics.render().decode()
    for field, count in (("page.url", 2), ("page.referrer", 2), ("properties", 10), ("user", 2)):
        assert f'personal_data_scrubbed_total{{field="{field}"}} {count}.0' in metrics, field


def test_event_names_are_scrubbed_and_click_ids_are_tokens(
    serve_gateway: Callable[..., GatewayServer], fake_api: FakeEventsApi
) -> None:
    """Issue 21.13: a custom event name carried an email to TikTok and the disk; a server's
    ttclid with CR, LF, NUL or `;` was passed on."""
    server = serve_gateway(server_api={"api_keys": [API_KEY]})
    headers = {"Authorization": f"Bearer {API_KEY}"}
    page = {"url": "https://shop.example/"}
    sent = httpx.post(
        f"{server.url}/v1/events",
        json={"event": "Signup_jane@example.com", "event_id": "n-1", "page": page},
        headers=headers,
    )
    assert sent.status_code == 202, sent.text
    [event] = wait_for_events(fake_api, 1)
    assert "jane" not in json.dumps(event).lower(), event
    assert event["event"] == "redacted"  # the whole name was an address
    for bad in ("E.C.P.x\r\nSet-Cookie: a=b", "E.C.P.x\x00", "E.C.P.x;y"):
        refused = httpx.post(
            f"{server.url}/v1/events",
            json={"event": "Lead", "event_id": "n-2", "page": page, "user": {"ttclid": bad}},
            headers=headers,
        )
        assert refused.status_code == 400 and refused.json()["field"] == "user.ttclid"
