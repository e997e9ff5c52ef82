"""The TikTok-compatible relay over real HTTP: TikTok's paths, token and envelope; events
stored before code 0, then delivered to the fake Events API in 2.0 form, hashed once."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from gateway.core.normalize import sha256_hex
from gateway.fake_api import FakeEventsApi, Fault
from tests.conftest import OTHER_PIXEL, PIXEL, TOKEN, GatewayServer, wait_for_events

EVENT_SET = "7300000000000000001"
OTHER_TOKEN = "other-pixel-token-0123456789"
API_KEY = "relay-api-key-0123456789"
EMAIL = "alice@example.com"
EMAIL_SHA = sha256_hex(EMAIL)
PHONE_SHA = sha256_hex("+12133734253")
DIGEST = "A" * 64
TRACK = "/open_api/v1.3/event/track/"
V1_TRACK = "/open_api/v1.3/pixel/track/"


def now() -> int:
    return int(time.time()) - 60


def v2_event(**fields: Any) -> dict[str, Any]:
    return {
        "event": "Purchase",
        "event_id": "o-1",
        "event_time": now(),
        "page": {"url": "https://shop.example/thanks"},
        **fields,
    }


def v2_body(*events: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"event_source": "web", "event_source_id": PIXEL, "data": list(events), **top}


class Relay(httpx.Client):
    """An HTTP client for one gateway, posting with PIXEL's token unless told otherwise."""

    def __init__(self, server: GatewayServer) -> None:
        super().__init__(base_url=server.url, timeout=30)
        self.server = server

    def submit(self, path: str, body: Any, token: str | None = TOKEN) -> httpx.Response:
        headers = {"Access-Token": token} if token is not None else {}
        if isinstance(body, bytes):
            return self.post(path, content=body, headers=headers)
        return self.post(path, json=body, headers=headers)

    def envelope(self, path: str, body: Any, token: str | None = TOKEN) -> dict[str, Any]:
        response = self.submit(path, body, token)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        answer: dict[str, Any] = response.json()
        assert set(answer) == {"code", "message", "request_id", "data"}
        return answer

    def fixups(self) -> dict[str, float]:
        text = httpx.get(self.server.metrics_url).text
        found = re.findall(r'tiktok_gateway_relay_fixups_total\{kind="(\w+)"\} ([\d.e+]+)', text)
        return {kind: float(value) for kind, value in found}


@pytest.fixture
def make_relay(serve_gateway: Callable[..., GatewayServer]) -> Iterator[Callable[..., Relay]]:
    clients: list[Relay] = []

    def make(**toml: Any) -> Relay:
        toml.setdefault(
            "pixels",
            [
                {"id": PIXEL, "access_token": TOKEN},
                {"id": OTHER_PIXEL, "access_token": OTHER_TOKEN},
                {"id": EVENT_SET, "access_token": TOKEN, "event_source": "offline"},
            ],
        )
        toml.setdefault("server_api", {"api_keys": [API_KEY]})
        client = Relay(serve_gateway(**toml))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def relay(make_relay: Callable[..., Relay]) -> Relay:
    return make_relay()


def delivered(fake: FakeEventsApi, count: int = 1, timeout: float = 15) -> list[dict[str, Any]]:
    """Wait until the fake accepted `count` events; return them (each with its envelope)."""
    return wait_for_events(fake, count, timeout)


def test_a_2_0_request_is_acknowledged_then_delivered_in_2_0_form(
    relay: Relay, fake_api: FakeEventsApi
) -> None:
    user, properties = {"email": EMAIL, "ip": "203.0.113.7"}, {"value": 5, "currency": "USD"}
    body = v2_body(
        v2_event(user=user, properties=properties),
        test_event_code="TEST123",
        partner_name="ShopPlugin",
    )
    answer = relay.envelope(TRACK, body)
    assert (answer["code"], answer["message"], answer["data"]) == (0, "OK", {})
    assert re.fullmatch(r"[0-9a-f]{32}", answer["request_id"])
    [event] = delivered(fake_api)
    assert event["event_source"] == "web" and event["event_source_id"] == PIXEL
    assert event["test_event_code"] == "TEST123"
    assert event["user"] == {"email": [EMAIL_SHA], "ip": "203.0.113.7"}
    assert event["properties"] == {"value": 5, "currency": "USD"}
    assert event["event_id"] == "o-1"


def test_every_1_0_field_reaches_its_2_0_field(relay: Relay, fake_api: FakeEventsApi) -> None:
    """The mapping table of docs/backends.md, field by field (pixel/track)."""
    at = datetime.fromtimestamp(now(), UTC)
    body = {
        "pixel_code": PIXEL,
        "event": "CompletePayment",
        "event_id": 1001,
        "timestamp": at.isoformat(),
        "test_event_code": "TEST1",
        "limited_data_use": True,
        "context": {
            "ad": {"callback": "E.C.P.click1"},
            "page": {"url": "https://shop.example/p", "referrer": "https://shop.example/"},
            "user": {
                "external_id": "user_123",
                "phone_number": "(+1)2133734253",
                "email": " ALICE@example.com ",
                "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
            },
            "user_agent": "Mozilla/5.0 test",
            "ip": "2001:db8::1",
            "locale": "en-US",
        },
        "properties": {
            "contents": [
                {"content_id": "SKU_1", "content_type": "product", "price": 2, "quantity": 3}
            ],
            "currency": "EUR",
            "value": 6,
            "query": "shoes",
            "description": "d",
        },
    }
    assert relay.envelope("/open_api/v1.3/pixel/track/", body)["code"] == 0
    [event] = delivered(fake_api)
    assert event == {
        "event_source": "web",
        "event_source_id": PIXEL,
        "test_event_code": "TEST1",
        "event": "CompletePayment",
        "event_id": "1001",
        "event_time": int(at.timestamp()),
        "limited_data_use": True,
        "user": {
            "ttclid": "E.C.P.click1",
            "external_id": [sha256_hex("user_123")],
            "phone": [PHONE_SHA],
            "email": [EMAIL_SHA],
            "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
            "user_agent": "Mozilla/5.0 test",
            "ip": "2001:db8::1",
            "locale": "en-US",
        },
        "page": {"url": "https://shop.example/p", "referrer": "https://shop.example/"},
        "properties": {
            "contents": [{"content_id": "SKU_1", "price": 2, "quantity": 3}],
            "content_type": "product",
            "currency": "EUR",
            "value": 6,
            "query": "shoes",
            "description": "d",
        },
    }


def test_pixel_batch_events_each_keep_their_fields(relay: Relay, fake_api: FakeEventsApi) -> None:
    batch = [
        {"type": "track", "event": "ViewContent", "event_id": f"b-{i}", "timestamp": now(),
         "context": {"page": {"url": f"https://shop.example/{i}"}, "user": {"email": EMAIL}}}
        for i in range(3)
    ]  # fmt: skip
    answer = relay.envelope("/open_api/v1.2/pixel/batch", {"pixel_code": PIXEL, "batch": batch})
    assert answer["code"] == 0
    events = sorted(delivered(fake_api, 3), key=lambda e: e["event_id"])
    assert [e["event_id"] for e in events] == ["b-0", "b-1", "b-2"]
    assert [e["page"]["url"] for e in events] == [f"https://shop.example/{i}" for i in range(3)]
    assert all(e["user"] == {"email": [EMAIL_SHA]} for e in events)


def test_offline_1_0_becomes_an_offline_2_0_event(relay: Relay, fake_api: FakeEventsApi) -> None:
    one = {
        "event_set_id": EVENT_SET,
        "event": "Purchase",
        "event_id": "store-1",
        "timestamp": now(),
        "context": {"user": {"emails": [EMAIL, DIGEST], "phone_numbers": ["+1 213 373 4253"]}},
        "properties": {"order_id": "A1", "value": 10, "currency": "USD", "event_channel": "store"},
    }
    assert relay.envelope("/open_api/v1.3/offline/track/", one)["code"] == 0
    batch = {"event_set_id": EVENT_SET, "batch": [{**one, "event_id": "store-2"}]}
    del batch["batch"][0]["event_set_id"]  # type: ignore[index]
    assert relay.envelope("/open_api/v1.3/offline/batch/", batch)["code"] == 0
    events = sorted(delivered(fake_api, 2), key=lambda e: e["event_id"])
    assert [e["event_id"] for e in events] == ["store-1", "store-2"]
    for event in events:
        assert (event["event_source"], event["event_source_id"]) == ("offline", EVENT_SET)
        assert event["user"] == {"email": [EMAIL_SHA, DIGEST.lower()], "phone": [PHONE_SHA]}
        assert event["properties"]["event_channel"] == "store"
        assert "page" not in event


def test_every_path_answers_under_both_versions_with_or_without_slash(
    relay: Relay, fake_api: FakeEventsApi
) -> None:
    one_web = {"event": "Lead", "context": {"page": {"url": "https://shop.example/"}}}
    bodies = {
        "event/track": v2_body(v2_event()),
        "pixel/track": {"pixel_code": PIXEL, **one_web},
        "pixel/batch": {"pixel_code": PIXEL, "batch": [{"type": "track", **one_web}]},
        "offline/track": {"event_set_id": EVENT_SET, "event": "Purchase"},
        "offline/batch": {"event_set_id": EVENT_SET, "batch": [{"event": "Purchase"}]},
    }
    sent = 0
    for version in ("v1.2", "v1.3"):
        for name, body in bodies.items():
            for slash in ("/", ""):
                path = f"/open_api/{version}/{name}{slash}"
                assert relay.envelope(path, body)["code"] == 0, path
                sent += 1
    assert sent == 20
    assert relay.fixups()["translated_from_1_0"] == 16


def test_identifiers_hashed_once_digests_untouched_and_counted(
    relay: Relay, fake_api: FakeEventsApi
) -> None:
    user = {"email": [EMAIL, EMAIL_SHA.upper()], "phone": PHONE_SHA, "external_id": "u-1"}
    assert relay.envelope(TRACK, v2_body(v2_event(user=user)))["code"] == 0
    [event] = delivered(fake_api)
    # the raw email and the digest of the same address are one value once hashed
    assert event["user"] == {
        "email": [EMAIL_SHA],
        "phone": [PHONE_SHA],
        "external_id": [sha256_hex("u-1")],
    }
    fixups = relay.fixups()
    assert fixups["raw_identifier_hashed"] == 2
    assert fixups["digest_passed_through"] == 2


def test_numeric_ids_and_ms_and_iso_times_become_strings_and_seconds(
    relay: Relay, fake_api: FakeEventsApi
) -> None:
    second = now()
    iso = datetime.fromtimestamp(second, UTC).isoformat().replace("+00:00", "Z")
    events = [
        v2_event(event_id=12345678901234, event_time=second * 1000 + 999),
        v2_event(event_id="iso", event_time=iso),
        v2_event(event_id="plain", event_time=second),
        v2_event(event_id="legacy", event="SubmitForm", event_time=second),
    ]
    assert relay.envelope(TRACK, v2_body(*events))["code"] == 0
    got = {e["event_id"]: e for e in delivered(fake_api, 4)}
    assert set(got) == {"12345678901234", "iso", "plain", "legacy"}
    assert {e["event_time"] for e in got.values()} == {second}
    assert got["legacy"]["event"] == "SubmitForm"  # TikTok converts it; so must the pixel's copy
    fixups = relay.fixups()
    assert fixups["event_id_number"] == 1
    assert fixups["time_milliseconds"] == 1
    assert fixups["time_iso"] == 1
    assert fixups["legacy_event_name"] == 1


def test_1001_events_in_one_request_are_split_downstream(
    relay: Relay, fake_api: FakeEventsApi
) -> None:
    events = [v2_event(event_id=f"e-{i}") for i in range(1001)]
    assert relay.envelope(TRACK, v2_body(*events))["code"] == 0
    got = delivered(fake_api, 1001, timeout=30)
    assert sorted(e["event_id"] for e in got) == sorted(f"e-{i}" for i in range(1001))
    sizes = sorted(len(r.body["data"]) for r in fake_api.requests if r.code == 0)
    assert sizes[-1] == 1000 and sum(sizes) == 1001 and len(sizes) >= 2
    assert relay.fixups()["split_over_1000"] == 1


def sentinel_delivered_alone(relay: Relay, fake: FakeEventsApi) -> None:
    """What was refused before this was not stored: the sentinel arrives, and alone."""
    sentinel = v2_event(event_id="sentinel")
    assert relay.envelope(TRACK, v2_body(sentinel))["code"] == 0
    assert [e["event_id"] for e in delivered(fake)] == ["sentinel"]


@pytest.mark.parametrize("token", [None, "", "wrong-token-0123456789", TOKEN + "x"])
def test_a_wrong_token_is_40105_and_nothing_is_stored(
    relay: Relay, fake_api: FakeEventsApi, token: str | None
) -> None:
    answer = relay.envelope(TRACK, v2_body(v2_event()), token=token)
    assert answer["code"] == 40105
    assert "revoked" in answer["message"]
    sentinel_delivered_alone(relay, fake_api)


def test_another_pixels_token_is_40001_and_an_api_key_may_send(
    relay: Relay, fake_api: FakeEventsApi
) -> None:
    fake_api.set_token(OTHER_TOKEN, [OTHER_PIXEL])
    refused = relay.envelope(TRACK, v2_body(v2_event()), token=OTHER_TOKEN)
    assert refused["code"] == 40001
    own = v2_body(v2_event(), event_source_id=OTHER_PIXEL)
    assert relay.envelope(TRACK, own, token=OTHER_TOKEN)["code"] == 0
    assert relay.envelope(TRACK, v2_body(v2_event(event_id="k")), token=API_KEY)["code"] == 0
    got = delivered(fake_api, 2)
    assert sorted((e["event_source_id"], e["event_id"]) for e in got) == [
        (PIXEL, "k"),
        (OTHER_PIXEL, "o-1"),
    ]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (TRACK, v2_body(v2_event(), event_source_id="CUNKNOWN0001"), "event_source_id"),
        (TRACK, v2_body(v2_event(), event_source_id=None), "event_source_id"),
        (TRACK, v2_body(v2_event(), event_source_id=EVENT_SET), "event_source_id"),
        (V1_TRACK, {"pixel_code": "CNOPE0000001", "event": "Lead"}, "pixel_code"),
        ("/open_api/v1.3/offline/track/", {"event_set_id": PIXEL, "event": "Lead"}, "event_set_id"),
    ],
)  # fmt: skip
def test_an_unknown_event_source_is_refused_as_tiktok_does(
    relay: Relay, fake_api: FakeEventsApi, path: str, body: dict[str, Any], field: str
) -> None:
    answer = relay.envelope(path, body)
    assert answer["code"] == 40002
    assert answer["message"].startswith(f"{field}: ")
    sentinel_delivered_alone(relay, fake_api)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (TRACK, v2_body(v2_event(), v2_event(properties={"value": "$5"})),
         "data[1].properties.value"),
        (TRACK, v2_body(v2_event(), v2_event(event_time="yesterday")), "data[1].event_time"),
        (TRACK, v2_body(v2_event(user={"email": True})), "data[0].user.email"),
        (TRACK, v2_body(), "data"),
        (TRACK, {"event_source_id": PIXEL, "data": [v2_event()]}, "event_source"),
        ("/open_api/v1.3/pixel/batch/",
         {"pixel_code": PIXEL, "batch": [{"event": "Lead", "timestamp": "soon",
                                          "context": {"page": {"url": "https://s.example/"}}}]},
         "batch[0].timestamp"),
        ("/open_api/v1.3/pixel/batch/",
         {"pixel_code": PIXEL, "batch": [{"type": "identify", "event": "Lead"}]}, "batch[0].type"),
        ("/open_api/v1.3/pixel/track/",
         {"pixel_code": PIXEL, "event": "Lead", "context": {"page": {"url": "https://s.example/"},
                                                           "ip": "not-an-ip"}},
         "context.ip"),
        ("/open_api/v1.3/pixel/track/",
         {"pixel_code": PIXEL, "event": "Lead", "context": {"page": {"url": "https://s.example/"},
                                                           "ad": {"callback": ["x"]}}},
         "context.ad.callback"),
        ("/open_api/v1.3/pixel/track/", {"pixel_code": PIXEL, "event": "Lead"}, "context.page.url"),
        ("/open_api/v1.3/offline/batch/",
         {"event_set_id": EVENT_SET, "batch": [{"event": "Purchase"},
                                               {"event": "Purchase",
                                                "context": {"user": {"phone_numbers": [{}]}}}]},
         "batch[1].context.user.phone_numbers[0]"),
    ],
)  # fmt: skip
def test_an_invalid_event_refuses_the_whole_request_naming_the_field(
    relay: Relay, fake_api: FakeEventsApi, path: str, body: dict[str, Any], field: str
) -> None:
    answer = relay.envelope(path, body)
    assert answer["code"] == 40002
    assert answer["message"].startswith(f"{field}: "), answer["message"]
    sentinel_delivered_alone(relay, fake_api)


def test_tiktoks_later_refusal_lands_in_the_dead_letters(
    relay: Relay, fake_api: FakeEventsApi
) -> None:
    """Code 0 means stored, not accepted by TikTok: what TikTok refuses afterwards is a dead
    letter with TikTok's reason, and the request's other events are delivered."""
    message = "Batch.{position}.properties.contents.0.content_id: Not a valid string"
    fake_api.add_fault(Fault(code=40002, message=message, event_id="refused", times=None))
    events = [v2_event(event_id="refused"), v2_event(event_id="fine")]
    assert relay.envelope(TRACK, v2_body(*events))["code"] == 0
    assert [e["event_id"] for e in delivered(fake_api)] == ["fine"]
    deadline = time.monotonic() + 15
    outbox = relay.server.gateway.outbox  # type: ignore[union-attr]
    while not (dead := relay.server.call(outbox.dead_letters())):
        assert time.monotonic() < deadline, "no dead letter"
        time.sleep(0.02)
    assert [(d.event.event_id, d.code) for d in dead] == [("refused", 40002)]
    assert "content_id" in dead[0].reason
    # what the console reads: both traced as relayed, each with its own fate
    recent = relay.server.gateway.recent  # type: ignore[union-attr]
    deadline = time.monotonic() + 15
    while True:
        traces = {t.event_id: t for t in relay.server.call(_latest(recent))}
        if {t.state for t in traces.values()} >= {"delivered"} and len(traces) == 2:
            break
        assert time.monotonic() < deadline, {k: t.state for k, t in traces.items()}
        time.sleep(0.02)
    assert {t.source for t in traces.values()} == {"relay"}
    assert traces["fine"].state == "delivered" and traces["refused"].state != "delivered"


async def _latest(recent: Any) -> list[Any]:
    """Read the buffer on the server's own loop, where it lives."""
    traces: list[Any] = recent.latest()
    return traces


def test_an_unwritable_outbox_is_50002_with_retry_after(relay: Relay) -> None:
    relay.server.fill_the_disk()
    events = [v2_event(event_id=f"o-{i}", properties={"description": "x" * 1500}) for i in range(5)]
    response = relay.submit(TRACK, v2_body(*events))
    assert response.status_code == 200
    assert response.json()["code"] == 50002
    assert response.headers["retry-after"] == "5"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_get_the_envelope_too(relay: Relay, method: str) -> None:
    response = relay.request(method, TRACK, headers={"Access-Token": TOKEN})
    assert response.status_code == 200 and response.json()["code"] == 40000


def test_limits_answer_in_the_envelope(make_relay: Callable[..., Relay]) -> None:
    relay = make_relay(relay={"max_events": 2, "max_body_bytes": 2048})
    too_many = relay.envelope(TRACK, v2_body(v2_event(), v2_event(), v2_event()))
    assert (too_many["code"], too_many["message"].split(":")[0]) == (40002, "data")
    too_big = relay.envelope(TRACK, v2_body(v2_event(properties={"description": "x" * 3000})))
    assert (too_big["code"], too_big["message"].split(":")[0]) == (40002, "body")


def test_the_relay_can_be_turned_off(make_relay: Callable[..., Relay]) -> None:
    relay = make_relay(relay={"enabled": False})
    assert relay.submit(TRACK, v2_body(v2_event())).status_code == 404


def test_the_token_never_reaches_a_log_line(
    relay: Relay, fake_api: FakeEventsApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    relay.envelope(TRACK, v2_body(v2_event()), token=TOKEN)
    relay.envelope(TRACK, v2_body(v2_event()), token=OTHER_TOKEN)
    relay.envelope(TRACK, b"{not json", token=TOKEN)
    delivered(fake_api)
    assert caplog.records, "the sentinel: the gateway did log"
    assert TOKEN not in caplog.text and OTHER_TOKEN not in caplog.text
