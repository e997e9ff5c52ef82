"""The fake Events API itself: it must reject what TikTok rejects, or our tests prove nothing."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.fake_api import FakeEventsApi
from tests.conftest import OTHER_PIXEL, PIXEL, TOKEN

TRACK = "/open_api/v1.3/event/track/"
HASH = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"
VALID: dict[str, Any] = {
    "event_source": "web",
    "event_source_id": PIXEL,
    "data": [
        {
            "event": "Purchase",
            "event_time": 1_732_300_000,
            "event_id": "e-1",
            "user": {"email": [HASH], "ip": "203.0.113.7"},
            "properties": {"value": 10, "currency": "USD"},
            "page": {"url": "https://shop.example/"},
        }
    ],
}


@pytest.fixture
def http(fake_api: FakeEventsApi) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake_api.url, timeout=5) as client:
        yield client


def post(http: httpx.Client, body: Any, token: str = TOKEN) -> dict[str, Any]:
    response = http.post(TRACK, json=body, headers={"Access-Token": token})
    assert response.status_code == 200
    envelope: dict[str, Any] = response.json()
    return envelope


def mutated(change: Any) -> dict[str, Any]:
    body = copy.deepcopy(VALID)
    change(body)
    return body


def test_valid_body_is_accepted_and_recorded(http: httpx.Client, fake_api: FakeEventsApi) -> None:
    assert post(http, VALID)["code"] == 0
    assert fake_api.accepted_events()[0]["event_id"] == "e-1"
    assert fake_api.accepted_events()[0]["event_source_id"] == PIXEL


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda b: b["data"][0].update(event_id=123),
            "Invalid value for event_id: not a valid string.",
        ),
        (lambda b: b["data"][0].update(event_time=1_732_300_000_000), "event_time"),
        (lambda b: b["data"][0].update(event_time="1732300000"), "event_time"),
        (lambda b: b["data"][0].update(test_event_code="T1"), "test_event_code"),
        (lambda b: b["data"][0]["user"].update(email=["alice@example.com"]), "user.email"),
        (lambda b: b["data"][0]["user"].update(phone="+12133734253"), "user.phone"),
        (lambda b: b["data"][0].pop("page"), "page.url"),
        (lambda b: b["data"][0]["properties"].update(value="$10"), "value"),
        (lambda b: b.update(data=[]), "data"),
        (lambda b: b.update(data=b["data"] * 1001), "data"),
        (lambda b: b.update(event_source="website"), "event_source"),
        (lambda b: b.pop("event_source_id"), "event_source_id"),
        (lambda b: b["data"][0].update(pixel_code=PIXEL), "pixel_code"),
    ],
)
def test_invalid_bodies_get_40002(http: httpx.Client, change: Any, message: str) -> None:
    envelope = post(http, mutated(change))
    assert envelope["code"] == 40002
    assert message in envelope["message"]


def test_1000_events_are_accepted(http: httpx.Client) -> None:
    assert post(http, mutated(lambda b: b.update(data=b["data"] * 1000)))["code"] == 0


def test_wrong_or_missing_token_is_40105(http: httpx.Client) -> None:
    assert post(http, VALID, token="nope")["code"] == 40105
    assert http.post(TRACK, json=VALID).json()["code"] == 40105


def test_token_scoped_to_pixels_gets_40001(http: httpx.Client, fake_api: FakeEventsApi) -> None:
    fake_api.set_token("scoped", [OTHER_PIXEL])
    assert post(http, VALID, token="scoped")["code"] == 40001


def test_faults_can_be_scripted_over_http(http: httpx.Client, fake_api: FakeEventsApi) -> None:
    assert http.post("/_fake/faults", json=[{"status": 503, "times": 2}]).status_code == 200
    statuses = [
        http.post(TRACK, json=VALID, headers={"Access-Token": TOKEN}).status_code for _ in range(3)
    ]
    assert statuses == [503, 503, 200]
    events = http.get("/_fake/events").json()
    assert [e["event_id"] for e in events] == ["e-1"]
    assert http.post("/_fake/faults", json={"bogus": 1}).status_code == 400


def test_pixel_scoped_fault_spares_other_pixels(
    http: httpx.Client, fake_api: FakeEventsApi
) -> None:
    fake_api.add_fault(code=40002, message="bad pixel", pixel=OTHER_PIXEL, times=None)
    other = mutated(lambda b: b.update(event_source_id=OTHER_PIXEL))
    assert post(http, other)["code"] == 40002
    assert post(http, VALID)["code"] == 0
    assert post(http, other)["code"] == 40002


def test_unknown_path_is_404(http: httpx.Client) -> None:
    assert http.get("/nowhere").status_code == 404
    assert http.get(TRACK).status_code == 405
