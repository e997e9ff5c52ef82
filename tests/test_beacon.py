"""The beacon endpoint and the snippet over real HTTP, delivering to the fake Events API."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.fake_api import FakeEventsApi
from gateway.ingest.sources.beacon.cookies import VisitorCookies, VisitorRecord
from gateway.settings import CookieSettings, Secret
from tests.conftest import PIXEL, TOKEN, GatewayServer

SHOP = "http://shop.test"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
SECRET = "cookie-secret-0123456789abcdef"
PAGE = {"url": "http://shop.test/product/1", "referrer": "http://shop.test/"}
EVENT = {"event": "AddToCart", "event_id": "b-1", "page": PAGE}


def counts(response: httpx.Response) -> tuple[int, int]:
    """(accepted, dropped) from a 204 answer's headers."""
    assert response.status_code == 204, response.text
    return int(response.headers["x-accepted"]), int(response.headers["x-dropped"])


class Beacon:
    def __init__(self, server: GatewayServer, fake: FakeEventsApi) -> None:
        self.server, self.fake = server, fake
        self.http = httpx.Client(base_url=server.url, timeout=10)

    def post(self, body: Any, *, origin: str | None = SHOP, **headers: str) -> httpx.Response:
        base = {"Content-Type": "text/plain", "User-Agent": CHROME}
        if origin is not None:
            base["Origin"] = origin
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post("/b", content=content, headers={**base, **headers})

    def delivered(self, count: int = 1, within: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while len(self.fake.accepted_events()) < count:
            assert time.monotonic() < deadline, "events not delivered"
            time.sleep(0.02)
        return self.fake.accepted_events()

    def nothing_delivered(self) -> None:
        """Nothing of what was posted so far reached TikTok: a sentinel event posted now is
        delivered first (the outbox is FIFO), then nothing but it has arrived."""
        sentinel = {**EVENT, "event_id": "sentinel", "consent": "granted"}
        assert counts(self.post(sentinel, Cookie="")) == (1, 0)
        delivered = self.delivered(1)
        assert [e["event_id"] for e in delivered] == ["sentinel"]
        self.fake.reset()


@pytest.fixture
def make_beacon(
    serve_gateway: Callable[..., GatewayServer], fake_api: FakeEventsApi
) -> Iterator[Callable[..., Beacon]]:
    made: list[Beacon] = []

    def make(pixel: dict[str, Any] | None = None, **toml: Any) -> Beacon:
        toml.setdefault(
            "pixels", [{"id": PIXEL, "access_token": TOKEN, "origins": [SHOP], **(pixel or {})}]
        )
        toml.setdefault("cookies", {"secrets": [SECRET]})
        beacon = Beacon(serve_gateway(**toml), fake_api)
        made.append(beacon)
        return beacon

    yield make
    for beacon in made:
        beacon.http.close()


@pytest.fixture
def beacon(make_beacon: Callable[..., Beacon]) -> Beacon:
    return make_beacon()


def test_a_beacon_is_enriched_and_delivered(beacon: Beacon) -> None:
    response = beacon.post(
        {**EVENT, "user": {"email": " Alice_abc@gmail.com", "ip": "6.6.6.6"}},
        **{"Accept-Language": "de-DE,de;q=0.9", "Cookie": "_ttp=2F7h37YkS1j57AYSKTI7IHhJPYH"},
    )
    assert counts(response) == (1, 0)
    assert response.headers["access-control-allow-origin"] == SHOP
    [event] = beacon.delivered()
    assert (event["event"], event["event_id"]) == ("AddToCart", "b-1")
    user = event["user"]
    assert user["ip"] == "127.0.0.1"  # the connection, not what the browser claimed
    assert user["user_agent"] == CHROME
    assert user["ttp"] == "2F7h37YkS1j57AYSKTI7IHhJPYH"
    assert user["locale"] == "de-DE"
    assert user["email"] == ["848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"]
    assert event["page"] == PAGE
    ttp = [c for c in response.headers.get_list("set-cookie") if c.startswith("_ttp=")]
    assert ttp and "Max-Age=34128000" in ttp[0] and "HttpOnly" not in ttp[0]


@pytest.mark.parametrize("origin", ["http://evil.test", None])
def test_an_origin_not_configured_gets_403(beacon: Beacon, origin: str | None) -> None:
    response = beacon.post(EVENT, origin=origin)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden_origin"
    assert "access-control-allow-origin" not in response.headers


def test_preflight_for_json_from_an_allowed_origin(beacon: Beacon) -> None:
    response = beacon.http.options(
        "/b", headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == SHOP
    assert response.headers["access-control-allow-credentials"] == "true"
    refused = beacon.http.options("/b", headers={"Origin": "http://evil.test"})
    assert refused.status_code == 403


def test_json_content_type_and_small_arrays(beacon: Beacon) -> None:
    events = [{**EVENT, "event_id": f"b-{i}"} for i in range(3)]
    response = beacon.post(events, **{"Content-Type": "application/json"})
    assert counts(response) == (3, 0)
    assert {e["event_id"] for e in beacon.delivered(3)} == {"b-0", "b-1", "b-2"}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{oops", 400, "body"),
        (b"", 400, "body"),
        (b"[]", 400, "body"),
        (b"42", 400, "event"),
        (json.dumps({**EVENT, "event_time": "soon"}).encode(), 400, "event_time"),
        (
            json.dumps({**EVENT, "user": {"email": ["a@b.c", {"x": 1}]}}).encode(),
            400,
            "user.email[1]",
        ),
        (
            json.dumps({**EVENT, "properties": {"value": "$5", "currency": "USD"}}).encode(),
            400,
            "properties.value",
        ),
        (json.dumps([EVENT, {**EVENT, "consent": "maybe"}]).encode(), 400, "[1].consent"),
        (json.dumps({**EVENT, "pixel_id": "COTHER"}).encode(), 400, "pixel_id"),
        (json.dumps([EVENT] * 11).encode(), 413, "body"),
        (json.dumps({**EVENT, "properties": {"description": "x" * 20000}}).encode(), 413, "body"),
    ],
)
def test_bad_beacons_get_a_json_4xx_naming_the_field(
    beacon: Beacon, body: bytes, status: int, field: str
) -> None:
    response = beacon.post(body)
    assert response.status_code == status
    assert response.json()["field"] == field
    assert response.headers["access-control-allow-origin"] == SHOP


def test_other_content_types_get_415(beacon: Beacon) -> None:
    response = beacon.post(EVENT, **{"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415


def test_spoofed_forwarded_for_is_ignored_from_an_untrusted_peer(beacon: Beacon) -> None:
    beacon.post(EVENT, **{"X-Forwarded-For": "203.0.113.7"})
    assert beacon.delivered()[0]["user"]["ip"] == "127.0.0.1"


def test_forwarded_for_is_honoured_from_a_trusted_proxy(make_beacon: Callable[..., Beacon]) -> None:
    beacon = make_beacon(browser={"trusted_proxies": ["127.0.0.0/8"]})
    beacon.post(EVENT, **{"X-Forwarded-For": "198.51.100.1, 203.0.113.7"})
    assert beacon.delivered()[0]["user"]["ip"] == "203.0.113.7"


def test_bots_are_dropped_and_counted(beacon: Beacon) -> None:
    response = beacon.post(EVENT, **{"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"})
    assert counts(response) == (0, 1)
    beacon.nothing_delivered()
    metrics = httpx.get(beacon.server.metrics_url).text
    assert 'tiktok_gateway_events_dropped_total{reason="bot"} 1.0' in metrics


def test_tag_testing_pages_are_dropped(beacon: Beacon) -> None:
    body = {**EVENT, "page": {"url": "https://gtm-msr.appspot.com/render?id=GTM-1"}}
    assert counts(beacon.post(body)) == (0, 1)
    beacon.nothing_delivered()


def test_no_consent_means_nothing_forwarded(make_beacon: Callable[..., Beacon]) -> None:
    beacon = make_beacon(pixel={"require_consent": True})
    assert counts(beacon.post({**EVENT, "consent": "denied"})) == (0, 1)
    assert counts(beacon.post(EVENT)) == (0, 1)
    beacon.nothing_delivered()
    assert counts(beacon.post({**EVENT, "consent": "granted"})) == (1, 0)
    assert len(beacon.delivered()) == 1
    assert 'reason="no_consent"} 2.0' in httpx.get(beacon.server.metrics_url).text


def test_limited_data_use_from_the_pixel_config(make_beacon: Callable[..., Beacon]) -> None:
    beacon = make_beacon(pixel={"limited_data_use": True})
    beacon.post(EVENT)
    assert beacon.delivered()[0]["limited_data_use"] is True


def test_new_click_id_sets_first_party_cookies(make_beacon: Callable[..., Beacon]) -> None:
    beacon = make_beacon(cookies={"secrets": [SECRET], "domain": "shop.test"})
    page = {"url": "http://shop.test/landing?ttclid=E.C.P.click1", "referrer": ""}
    response = beacon.post({**EVENT, "page": page})
    cookies = {c.split("=", 1)[0]: c for c in response.headers.get_list("set-cookie")}
    ttclid = cookies["ttclid"]
    assert ttclid.startswith("ttclid=E.C.P.click1;")
    for attribute in ("Max-Age=2592000", "Path=/", "Domain=shop.test", "Secure", "SameSite=Lax"):
        assert attribute in ttclid
    assert "HttpOnly" in cookies["_ttgw"]
    assert beacon.delivered()[0]["user"]["ttclid"] == "E.C.P.click1"


def test_generated_ttp_is_the_same_for_near_simultaneous_beacons(
    make_beacon: Callable[..., Beacon],
) -> None:
    beacon = make_beacon(browser={"generate_ttp": True})
    answers = [beacon.post({**EVENT, "event_id": f"g-{i}"}) for i in range(3)]
    ttps = {e["user"]["ttp"] for e in beacon.delivered(3)}
    assert len(ttps) == 1 and len(next(iter(ttps))) == 27
    set_cookies = [c for a in answers for c in a.headers.get_list("set-cookie")]
    assert any(c.startswith(f"_ttp={next(iter(ttps))};") for c in set_cookies)


def test_a_returning_visitor_gets_no_cookie_churn(beacon: Beacon) -> None:
    page = {"url": "http://shop.test/landing?ttclid=E.C.P.once", "referrer": ""}
    first = beacon.post({**EVENT, "page": page}, Cookie="_ttp=2F7h37YkS1j57AYSKTI7IHhJPYH")
    jar = {c.split("=", 1)[0]: c.split(";", 1)[0] for c in first.headers.get_list("set-cookie")}
    assert set(jar) == {"ttclid", "_ttp", "_ttgw"}
    cookie_header = "; ".join(jar.values())
    again = beacon.post({**EVENT, "event_id": "b-2"}, Cookie=cookie_header)
    assert again.headers.get_list("set-cookie") == []
    events = beacon.delivered(2)
    assert {e["user"]["ttclid"] for e in events} == {"E.C.P.once"}


def signed(ttclid: str, first_seen: int, secret: str = SECRET) -> str:
    """A visitor cookie as a gateway holding `secret` signs it."""
    cookies = VisitorCookies(CookieSettings(secrets=(Secret(secret),)))
    return cookies.signed_value(VisitorRecord(ttclid, first_seen))


def test_signed_cookie_restores_a_lost_click_id(beacon: Beacon) -> None:
    cookie = signed("E.C.P.kept", int(time.time()) - 86400)
    beacon.post(EVENT, Cookie=f"_ttgw={cookie}")
    assert beacon.delivered()[0]["user"]["ttclid"] == "E.C.P.kept"


def test_tampered_signed_cookie_is_ignored(beacon: Beacon) -> None:
    forged = signed("E.C.P.forged", int(time.time()), secret="not-the-secret-000000")
    genuine = signed("E.C.P.genuine", int(time.time()))
    altered = genuine.replace("E.C.P.genuine", "E.C.P.altered")
    beacon.post({**EVENT, "event_id": "f"}, Cookie=f"_ttgw={forged}")
    beacon.post({**EVENT, "event_id": "a"}, Cookie=f"_ttgw={altered}")
    assert all("ttclid" not in event["user"] for event in beacon.delivered(2))


def test_click_id_older_than_the_window_is_not_sent(beacon: Beacon) -> None:
    old = int(time.time()) - 29 * 86400
    cookie = signed("E.C.P.old", old)
    beacon.post(EVENT, Cookie=f"_ttgw={cookie}; ttclid=E.C.P.old")
    assert "ttclid" not in beacon.delivered()[0]["user"]


def test_rotated_cookie_keys_still_verify(make_beacon: Callable[..., Beacon]) -> None:
    beacon = make_beacon(cookies={"secrets": ["new-secret-0123456789abcd", SECRET]})
    cookie = signed("E.C.P.rotated", int(time.time()))
    beacon.post(EVENT, Cookie=f"_ttgw={cookie}")
    assert beacon.delivered()[0]["user"]["ttclid"] == "E.C.P.rotated"


def test_snippet_is_small_cached_and_carries_the_name_map(beacon: Beacon) -> None:
    response = beacon.http.get("/gw.js", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/javascript")
    assert response.headers["content-encoding"] == "gzip"
    assert int(response.headers["content-length"]) < 3 * 1024
    assert '"purchase":["Purchase"]' in response.text and '"/b"' in response.text
    etag = response.headers["etag"]
    assert beacon.http.get("/gw.js", headers={"If-None-Match": etag}).status_code == 304
    plain = beacon.http.get("/gw.js", headers={"Accept-Encoding": "identity"})
    assert plain.text == response.text and "content-encoding" not in plain.headers


def test_unwritable_outbox_answers_503(beacon: Beacon) -> None:
    beacon.server.fill_the_disk()
    events = [
        {**EVENT, "event_id": f"b-{i}", "properties": {"description": "x" * 1200}}
        for i in range(10)
    ]
    response = beacon.post(events)
    assert response.status_code == 503 and response.headers["retry-after"] == "5"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"properties": {"num_items": 1e300}}, "properties.num_items"),
        (
            {"properties": {"contents": [{"content_id": "a", "quantity": "9" * 25}]}},
            "properties.contents[0].quantity",
        ),
        ({"properties": {"value": "1" * 400, "currency": "USD"}}, "properties.value"),
        ({"properties": {"custom": 10**30}}, "properties.custom"),
        ({"properties": {"email": "a@b.example"}}, "properties.email"),
        ({"event_time": "1" * 400}, "event_time"),
        ({"event_time": 10**30}, "event_time"),
        ({"event_id": 1e300}, "event_id"),
        ({"lead": {"nested": {"deep": 1}}}, "lead.nested"),
    ],
)
def test_hostile_values_get_400_and_the_outbox_keeps_working(
    beacon: Beacon, change: dict[str, Any], field: str
) -> None:
    response = beacon.post({**EVENT, **change})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert beacon.post(EVENT).status_code == 204  # the writer thread is alive and well
    assert len(beacon.delivered()) == 1


def test_consent_denied_forwards_nothing_and_sets_no_cookie(beacon: Beacon) -> None:
    response = beacon.post(
        {**EVENT, "consent": "denied", "page": {"url": "http://shop.test/?ttclid=E.C.P.no"}},
        Cookie="_ttp=2F7h37YkS1j57AYSKTI7IHhJPYH",
    )
    assert counts(response) == (0, 1)
    assert response.headers.get_list("set-cookie") == []
    beacon.nothing_delivered()


def test_huge_user_agents_are_not_parsed_but_dropped(beacon: Beacon) -> None:
    started = time.monotonic()
    response = beacon.post(EVENT, **{"User-Agent": CHROME + " x" * 3000})
    assert counts(response) == (0, 1)
    assert time.monotonic() - started < 1.0
