"""Normalisation and hashing, checked on what the fake Events API received over real HTTP.

Every digest below is a literal: if a rule drifts (an untrimmed email, a phone without '+',
a hash of a hash) the test fails on the exact bytes TikTok would have seen.
"""

from __future__ import annotations

import pytest

from tests.conftest import NOW, Deliver

pytestmark = pytest.mark.anyio

ALICE = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"
PHONE_US = "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd"  # +12133734253
USER_123 = "80fba0ae1c48e3978e43e4efc365e14e12ea0c830ba8ba5b9a2dafc7e3f2ab8b"
EMPTY_HASH = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


async def user_of(deliver: Deliver, user: dict[str, object], **toml: object) -> dict[str, object]:
    data = await deliver({"event": "Purchase", "user": user}, **toml)
    return dict(data[0].get("user", {}))


async def test_tiktok_examples_from_the_spec(deliver: Deliver) -> None:
    user = await user_of(
        deliver,
        {"email": " ALICE_abc@gmail.com ", "phone": "(+1)2133734253", "external_id": "user_123"},
    )
    assert user["email"] == [ALICE]
    assert user["phone"] == [PHONE_US]
    assert user["external_id"] == [USER_123]


async def test_external_id_keeps_case_and_is_trimmed(deliver: Deliver) -> None:
    user = await user_of(deliver, {"external_id": "  User_123 "})
    assert user["external_id"] == [
        "e40649be2376c2d87395d79091b082b7313f8326a4d9c27da52dec8253eaca92"
    ]


@pytest.mark.parametrize(
    ("region", "national", "digest"),
    [
        ("US", "213-373-4253", PHONE_US),
        ("DE", "030 123456", "a909469fabf3f43d0b7b6c42a85a6e7e8ceb36c7a2f0f1b9c15b80dc16384cb7"),
        ("GB", "07911 123456", "20b18ac9de7b3aad174961827d8e451c410af9aedfd1d699927f4b29b81aa1fa"),
    ],
)
async def test_national_numbers_use_the_default_region(
    deliver: Deliver, region: str, national: str, digest: str
) -> None:
    user = await user_of(deliver, {"phone": national}, default_phone_region=region)
    assert user["phone"] == [digest]


async def test_possible_but_invalid_number_is_kept(deliver: Deliver) -> None:
    user = await user_of(deliver, {"phone": "+1 555 555 0100"})
    assert user["phone"] == ["0cbf019479241f66c9c60d39e69e06989f108bc47da5b938a87045a615cad4a4"]


async def test_unparseable_phone_is_left_out_but_the_event_goes(deliver: Deliver) -> None:
    user = await user_of(deliver, {"phone": "call me maybe", "email": "alice_abc@gmail.com"})
    assert "phone" not in user
    assert user["email"] == [ALICE]


@pytest.mark.parametrize("field", ["email", "phone", "external_id"])
async def test_sha256_values_pass_through_lowercased(deliver: Deliver, field: str) -> None:
    user = await user_of(deliver, {field: ALICE.upper()})
    assert user[field] == [ALICE]


async def test_prehashed_aliases_are_kept(deliver: Deliver) -> None:
    user = await user_of(deliver, {"sha256_email": ALICE, "sha256_phone": PHONE_US.upper()})
    assert user["email"] == [ALICE]
    assert user["phone"] == [PHONE_US]


async def test_38_char_hex_is_hashed_not_passed(deliver: Deliver) -> None:
    user = await user_of(deliver, {"external_id": "abc123abc123abc123abc123abc123abc123ab"})
    assert user["external_id"] == [
        "53eb4047148b7a2ca36bc2725520f0852a060d32e8adb9e5dd72b8629409dc46"
    ]


async def test_blank_identifiers_are_left_out(deliver: Deliver) -> None:
    user = await user_of(
        deliver, {"email": "   ", "phone": "", "external_id": [" ", ""], "ip": "203.0.113.7"}
    )
    assert set(user) == {"ip"}
    assert EMPTY_HASH not in str(user)


async def test_lists_are_hashed_element_by_element(deliver: Deliver) -> None:
    user = await user_of(deliver, {"email": [" ALICE_abc@gmail.com", "bob@example.com", ""]})
    assert user["email"] == [
        ALICE,
        "5ff860bf1190596c7188ab851db691f0f3169c453936e9e1eba2f9a47f7a0018",
    ]


async def test_names_zip_and_places(deliver: Deliver) -> None:
    user = await user_of(
        deliver,
        {
            "first_name": " Jo hn ",
            "last_name": "SMITH",
            "zip_code": "94 103",
            "city": "San Francisco",
            "state": "C.A.",
            "country": "US",
        },
    )
    assert user["first_name"] == "96d9632f363564cc3032521409cf22a852f2032eec099ed5967c0d000cec607a"
    assert user["last_name"] == "6627835f988e2c5e50533d491163072d3f4f41f5c8b04630150debb3722ca2dd"
    assert user["zip_code"] == "91dc2519ea98c5002cf2091e6a12b772eafdce9dca618e626d7d3b8275361789"
    assert (user["city"], user["state"], user["country"]) == ("sanfrancisco", "ca", "us")


async def test_raw_fields_are_never_hashed(deliver: Deliver) -> None:
    raw = {
        "ip": "2001:db8::1",
        "user_agent": "Mozilla/5.0 test",
        "ttp": "2F7h37YkS1j57AYSKTI7IHhJPYH",
        "ttclid": "E.C.P.abc",
        "locale": "en-US",
    }
    assert await user_of(deliver, raw) == raw


@pytest.mark.parametrize(
    "event_time",
    [
        1_732_299_000,
        1_732_299_000_999,
        1_732_299_000.75,
        "1732299000",
        "2024-11-22T18:10:00Z",
        "2024-11-22T19:10:00.500+01:00",
    ],
)
async def test_event_time_formats_give_the_same_seconds(
    deliver: Deliver, event_time: object
) -> None:
    data = await deliver({"event": "Purchase", "event_time": event_time})
    assert data[0]["event_time"] == 1_732_299_000


async def test_numeric_event_id_is_sent_as_a_string(deliver: Deliver) -> None:
    data = await deliver({"event": "Purchase", "event_id": 1234567890})
    assert data[0]["event_id"] == "1234567890"


async def test_server_event_without_id_gets_a_deterministic_one(deliver: Deliver) -> None:
    raw = {"event": "Purchase", "event_time": NOW - 60, "user": {"email": "a@b.example"}}
    first = await deliver(raw)
    second = await deliver(raw)
    assert first[0]["event_id"] == second[0]["event_id"]
    assert isinstance(first[0]["event_id"], str) and len(first[0]["event_id"]) == 32
    other = await deliver({**raw, "user": {"email": "c@d.example"}})
    assert other[0]["event_id"] != first[0]["event_id"]


async def test_value_is_computed_from_contents(deliver: Deliver) -> None:
    contents = [
        {"content_id": 17, "price": "99.99", "quantity": 2},
        {"content_id": "SKU_2", "price": 0.1, "quantity": 3},
    ]
    data = await deliver(
        {"event": "Purchase", "properties": {"currency": "usd", "contents": contents}}
    )
    props = data[0]["properties"]
    assert props["value"] == 200.28
    assert props["currency"] == "USD"
    assert props["contents"][0]["content_id"] == "17"
    assert props["contents"][0]["price"] == 99.99


async def test_numeric_string_value_is_converted(deliver: Deliver) -> None:
    data = await deliver({"event": "Purchase", "properties": {"value": "19.99", "currency": "EUR"}})
    assert data[0]["properties"]["value"] == 19.99


async def test_content_quantity_defaults_to_one(deliver: Deliver) -> None:
    data = await deliver(
        {
            "event": "AddToCart",
            "properties": {"currency": "USD", "contents": [{"content_id": "A", "price": 5}]},
        }
    )
    assert data[0]["properties"]["contents"][0]["quantity"] == 1
    assert data[0]["properties"]["value"] == 5


async def test_limited_data_use_follows_the_event_then_the_pixel(deliver: Deliver) -> None:
    data = await deliver({"event": "Purchase", "limited_data_use": True})
    assert data[0]["limited_data_use"] is True
    data = await deliver({"event": "Purchase"})
    assert "limited_data_use" not in data[0]


async def test_emails_in_page_urls_are_redacted(deliver: Deliver) -> None:
    page = {
        "url": "https://shop.example/thanks?contact=alice%40example.com&ttclid=E.C.P.x",
        "referrer": "https://shop.example/signup?u=bob@example.org",
    }
    data = await deliver({"event": "Lead", "page": page})
    assert data[0]["page"] == {
        "url": "https://shop.example/thanks?contact=redacted&ttclid=E.C.P.x",
        "referrer": "https://shop.example/signup?u=redacted",
    }
    untouched = "https://shop.example/@shop/p?q=@world&x=1&when=2024-11-22"
    data = await deliver({"event": "Lead", "page": {"url": untouched}})
    assert data[0]["page"]["url"] == untouched
