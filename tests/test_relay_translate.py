"""Reading TikTok's bodies into 2.0 events, without HTTP: the 1.0 mapping, and errors named
back in the 1.0 words the sender used."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.errors import EventError
from gateway.ingest.sources.relay.fixups import count_fixups
from gateway.ingest.sources.relay.translate import legacy_field, read_v1, read_v2


def test_a_1_0_batch_becomes_2_0_events_with_their_own_test_codes() -> None:
    body = {
        "pixel_code": "CPIX",
        "test_event_code": "SHARED",
        "partner_name": "Plugin",
        "batch": [
            {"type": "track", "event": "Lead", "timestamp": "2026-11-30T10:00:00Z",
             "context": {"ad": {"callback": "E.C.P.x"}, "locale": "de-DE",
                         "user": {"phone_number": "+4930123456", "emails": ["a@b.example"]}}},
            {"event": "Lead", "test_event_code": "OWN"},
        ],
    }  # fmt: skip
    relayed = read_v1(body, offline=False, batch=True)
    assert (relayed.source_id, relayed.source_id_field, relayed.event_source) == (
        "CPIX",
        "pixel_code",
        "web",
    )
    assert relayed.indexed == "batch" and relayed.legacy
    assert relayed.codes == ["SHARED", "OWN"]
    assert relayed.events[0] == {
        "event": "Lead",
        "event_time": "2026-11-30T10:00:00Z",
        "user": {
            "ttclid": "E.C.P.x",
            "locale": "de-DE",
            "phone_number": "+4930123456",
            "emails": ["a@b.example"],
        },
    }
    assert relayed.events[1] == {"event": "Lead"}


def test_a_2_0_body_is_taken_as_it_is() -> None:
    data = [{"event": "Purchase", "event_id": 5}]
    relayed = read_v2({"event_source": "Web", "event_source_id": "CPIX", "data": data})
    assert relayed.events is data and relayed.event_source == "web"
    assert relayed.codes == [None] and relayed.indexed == "data" and not relayed.legacy


@pytest.mark.parametrize(
    ("contents", "lifted"),
    [
        ([{"content_id": "1", "content_type": "product"}], "product"),
        ([{"content_type": "product_group"}, {"content_type": "product_group"}], "product_group"),
        ([{"content_type": "product"}, {"content_type": "product_group"}], None),
        ([{"content_type": "shoe"}], None),
        ([{"content_type": {"x": 1}}], None),
        ([{"content_id": "1"}], None),
    ],
)
def test_content_type_is_lifted_only_when_every_content_agrees(
    contents: list[dict[str, Any]], lifted: str | None
) -> None:
    body = {"pixel_code": "CPIX", "event": "Lead", "properties": {"contents": contents}}
    properties = read_v1(body, offline=False, batch=False).events[0]["properties"]
    assert properties.get("content_type") == lifted
    if lifted:
        assert all("content_type" not in c for c in properties["contents"])
    else:
        assert properties["contents"] == contents


@pytest.mark.parametrize(
    ("field", "legacy"),
    [
        ("event_time", "timestamp"),
        ("batch[3].event_time", "batch[3].timestamp"),
        ("user.ttclid", "context.ad.callback"),
        ("user.ip", "context.ip"),
        ("batch[0].user.user_agent", "batch[0].context.user_agent"),
        ("user.locale", "context.locale"),
        ("user.phone_number", "context.user.phone_number"),
        ("user.phones[1]", "context.user.phone_numbers[1]"),
        ("user.emails[0]", "context.user.emails[0]"),
        ("user.external_id", "context.user.external_id"),
        ("page.url", "context.page.url"),
        ("properties.value", "properties.value"),
        ("batch[1].properties.contents[0].price", "batch[1].properties.contents[0].price"),
        ("event_id", "event_id"),
    ],
)
def test_parser_fields_are_named_back_in_1_0_words(field: str, legacy: str) -> None:
    assert legacy_field(field) == legacy


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"pixel_code": "C", "batch": []}, "batch"),
        ({"pixel_code": "C", "batch": [1]}, "batch[0].event"),
        ({"pixel_code": "C", "batch": [{"event": "L", "context": []}]}, "batch[0].context"),
        ({"pixel_code": "C", "event": "L", "test_event_code": 5}, "test_event_code"),
        ({"pixel_code": "C", "batch": [{"event": "L", "pixel_code": "D"}]}, "batch[0].pixel_code"),
    ],
)  # fmt: skip
def test_1_0_shapes_are_refused_naming_the_field(body: Any, field: str) -> None:
    with pytest.raises(EventError) as caught:
        read_v1(body, offline=False, batch="batch" in str(body) or body == [])
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("body", "ignored"),
    [
        ({"pixel_code": "C", "batch": [{"event": "L"}], "data": []}, ["data"]),
        ({"pixel_code": "C", "event": "L", "context": {"user": {"phone": "1"}}},
         ["context.user.phone"]),
        ({"pixel_code": "C", "event": "L", "context": {"ad": {"id": "1"}}}, ["context.ad.id"]),
        ({"pixel_code": "C", "event": "L", "context": {"library": {}}}, ["context.library"]),
        ({"pixel_code": "C", "event": "L", "user": {}}, ["user"]),
        ({"pixel_code": "C", "batch": [{"event": "L", "pixel_code": "C", "sdk": 1}]},
         ["batch[0].sdk"]),
    ],
)  # fmt: skip
def test_1_0_fields_no_mapping_reads_are_ignored_and_named(body: Any, ignored: list[str]) -> None:
    """Real clients send more than the mapping reads (issue 22): ignored, named for the
    count and a debug line; a batch element's own pixel_code equal to the request's is no
    such field."""
    relayed = read_v1(body, offline=False, batch="batch" in body)
    assert relayed.ignored == ignored


def test_fixups_are_recognised_without_normalising() -> None:
    events = [
        {"event": "CompletePayment", "event_id": 7, "event_time": 1_732_300_000_000,
         "user": {"email": ["a@b.example", "A" * 64], "phones": ["+1 213 373 4253"]}},
        {"event": "Purchase", "event_id": "x", "event_time": "2026-11-30T10:00:00Z",
         "user": {"external_id": 12}},
        {"event": {"odd": True}, "event_time": "1732300000"},
        "not an event",
    ]  # fmt: skip
    assert count_fixups(events, legacy=True) == {
        "legacy_event_name": 1,
        "event_id_number": 1,
        "time_milliseconds": 1,
        "time_iso": 1,
        "raw_identifier_hashed": 3,
        "digest_passed_through": 1,
        "translated_from_1_0": 4,
    }
    assert count_fixups([{}] * 1001, legacy=False) == {"split_over_1000": 1}
