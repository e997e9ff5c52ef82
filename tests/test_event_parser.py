"""The input parser: names, routing fields, validation errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.errors import EventError
from gateway.fake_api import FakeEventsApi
from gateway.ingest.parser import Parsed, ParseRules, parse_event
from gateway.ingest.policy import BROWSER, SERVER, SourcePolicy
from gateway.settings import Settings
from tests.conftest import NOW, Deliver, SettingsFactory

WEB_PAGE = {"url": "https://shop.example/p"}


@pytest.fixture
def parse(make_settings: SettingsFactory) -> Any:
    def run(raw: dict[str, Any], *, policy: SourcePolicy = SERVER, **toml: Any) -> Parsed:
        settings: Settings = make_settings(**toml)
        return parse_event(
            {"page": WEB_PAGE, **raw},
            pixel=settings.pixels[0],
            rules=ParseRules.from_settings(settings),
            now=NOW,
            policy=policy,
        )

    return run


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("purchase", ("Purchase",)),
        ("PURCHASE", ("Purchase",)),
        ("page_view", ("ViewContent",)),
        ("generate_lead", ("Lead",)),
        ("submit_form", ("Lead",)),
        ("sign_up", ("CompleteRegistration",)),
        ("begin_checkout", ("InitiateCheckout",)),
        ("CompletePayment", ("CompletePayment",)),
        ("PlaceAnOrder", ("PlaceAnOrder",)),
        ("MyCustomThing", ("MyCustomThing",)),
    ],
)
def test_event_names_map_to_tiktok_names(parse: Any, name: str, expected: tuple[str, ...]) -> None:
    assert tuple(e.event for e in parse({"event": name}).events) == expected


def test_user_map_overrides_the_builtin_table(parse: Any) -> None:
    parsed = parse({"event": "purchase"}, event_names={"purchase": "CompletePayment"})
    assert [e.event for e in parsed.events] == ["CompletePayment"]


def test_strict_mode_rejects_unknown_names(parse: Any) -> None:
    with pytest.raises(EventError) as caught:
        parse({"event": "MyCustomThing"}, strict_event_names=True)
    assert caught.value.field == "event"
    assert "unknown event name" in caught.value.message
    assert parse({"event": "purchase"}, strict_event_names=True).events[0].event == "Purchase"


@pytest.mark.anyio
async def test_one_name_maps_to_several_events(deliver: Deliver) -> None:
    data = await deliver(
        {"event": "signup", "event_id": "e-1"},
        event_names={"signup": ["CompleteRegistration", "Lead"]},
    )
    assert [(d["event"], d["event_id"]) for d in data] == [
        ("CompleteRegistration", "e-1"),
        ("Lead", "e-1"),
    ]


@pytest.mark.anyio
async def test_test_event_code_is_top_level_only(deliver: Deliver, fake_api: FakeEventsApi) -> None:
    await deliver({"event": "Purchase", "test_event_code": "TEST123"})
    body = fake_api.requests[-1].body
    assert body["test_event_code"] == "TEST123"
    assert all("test_event_code" not in event for event in body["data"])


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (
            {"event": "Purchase", "properties": {"value": "$19.99", "currency": "USD"}},
            "properties.value",
        ),
        (
            {"event": "Purchase", "properties": {"value": "19,99", "currency": "USD"}},
            "properties.value",
        ),
        ({"event": "Purchase", "properties": {"value": 5}}, "properties.currency"),
        ({"event": "Purchase", "properties": {"currency": "dollars"}}, "properties.currency"),
        (
            {"event": "Purchase", "properties": {"contents": [{"quantity": 0}]}},
            "properties.contents[0].quantity",
        ),
        ({"event": "Purchase", "properties": {"contents": "SKU"}}, "properties.contents"),
        ({"event": "Purchase", "event_name": "x"}, "event_name"),
        ({"event": ""}, "event"),
        ({"event": 5}, "event"),
        ({"event": "Purchase", "user": {"mail": "a@b.c"}}, "user.mail"),
        ({"event": "Purchase", "user": {"email": {"a": 1}}}, "user.email"),
        ({"event": "Purchase", "user": {"sha256_email": "not-a-hash"}}, "user.sha256_email"),
        ({"event": "Purchase", "user": {"ip": "999.1.1.1"}}, "user.ip"),
        ({"event": "Purchase", "user": "alice"}, "user"),
        ({"event": "Purchase", "event_id": True}, "event_id"),
        ({"event": "Purchase", "event_time": "yesterday"}, "event_time"),
        ({"event": "Purchase", "event_time": NOW - 8 * 86400}, "event_time"),
        ({"event": "Purchase", "event_time": NOW + 3600}, "event_time"),
        ({"event": "Purchase", "limited_data_use": "yes"}, "limited_data_use"),
        ({"event": "Purchase", "page": {"url": None}}, "page.url"),
    ],
)
def test_invalid_input_names_the_field(parse: Any, raw: dict[str, Any], field: str) -> None:
    with pytest.raises(EventError) as caught:
        parse(raw)
    assert caught.value.field == field


def test_errors_never_quote_identifier_values(parse: Any) -> None:
    with pytest.raises(EventError) as caught:
        parse({"event": "Purchase", "user": {"sha256_email": "alice@secret.example"}})
    assert "alice" not in str(caught.value)


def test_max_event_age_is_configurable(parse: Any) -> None:
    old = NOW - 20 * 86400
    assert parse({"event": "Purchase", "event_time": old}, max_event_age_days=28).events
    with pytest.raises(EventError):
        parse({"event": "Purchase", "event_time": old})


def test_skewed_browser_clock_is_replaced_by_server_time(parse: Any) -> None:
    skewed = parse({"event": "Purchase", "event_time": NOW + 3600}, policy=BROWSER)
    assert skewed.events[0].event_time == int(NOW)
    close = parse({"event": "Purchase", "event_time": NOW - 30}, policy=BROWSER)
    assert close.events[0].event_time == int(NOW - 30)


def test_browser_event_without_id_gets_a_uuid(parse: Any) -> None:
    first = parse({"event": "Purchase"}, policy=BROWSER).events[0].event_id
    second = parse({"event": "Purchase"}, policy=BROWSER).events[0].event_id
    assert first != second and len(first) == 36


def test_unparseable_phone_is_counted_as_a_warning_without_its_value(parse: Any) -> None:
    parsed = parse({"event": "Purchase", "user": {"phone": ["12", "+12133734253"]}})
    assert len(parsed.events[0].user["phone"]) == 1
    assert parsed.warnings == ["user.phone: 1 value(s) not a phone number, left out"]


def test_record_round_trip(parse: Any) -> None:
    from gateway.core.event import Event

    event = parse(
        {"event": "Purchase", "user": {"email": "a@b.example"}, "lead": {"lead_id": "L1"}}
    ).events[0]
    assert Event.from_record(event.to_record()) == event
