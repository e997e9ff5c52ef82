"""A client we did not write: TikTok's own published Python SDK, pointed at the relay.

`tiktok-business-api-sdk-official` (PyPI, `business_api_client`) is used as its README shows:
a `Configuration` whose `host` is the base URL, an `ApiClient`, and `EventCallbackApi`'s
`pixel_track` / `pixel_batch` with the SDK's own models. Those are the only Events API
methods the SDK has (1.0; the npm SDK is the same). No published client we could find calls
the 2.0 path, so the 2.0 test sends through the same SDK's generic `ApiClient.call_api` —
the method every generated call goes through — with TikTok's 2.0 body. Each time, what
reaches the fake Events API is 2.0, with every identifier hashed exactly once.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import business_api_client as sdk
import httpx
import pytest
from business_api_client.tiktok_business.tiktok_exceptions import TiktokSDKError

from gateway.core.normalize import sha256_hex
from gateway.fake_api import FakeEventsApi
from tests.conftest import PIXEL, TOKEN, GatewayServer, wait_for_events

EMAIL_SHA = sha256_hex("alice@example.com")
PHONE_SHA = sha256_hex("+12133734253")


@pytest.fixture
def events_api(serve_gateway: Callable[..., GatewayServer]) -> Any:
    """The SDK's EventCallbackApi with the gateway as its host: the one line a user changes."""
    server = serve_gateway()
    configuration = sdk.Configuration()
    configuration.host = server.url
    return sdk.EventCallbackApi(sdk.ApiClient(configuration))


def delivered(fake: FakeEventsApi, count: int) -> list[dict[str, Any]]:
    return sorted(wait_for_events(fake, count, 15), key=lambda e: e["event_id"])


def context(number: int) -> Any:
    return sdk.PixelContext(
        ad=sdk.PixelContextAd(callback=f"E.C.P.sdk{number}"),
        page=sdk.PixelContextPage(url=f"https://shop.example/p/{number}"),
        user=sdk.PixelContextUser(
            email="Alice@Example.com", phone_number="+1 213 373 4253", external_id="user_123"
        ),
        user_agent="Mozilla/5.0 sdk",
        ip="203.0.113.9",
    )


def properties() -> Any:
    content = sdk.PixelContent(content_id="SKU_1", content_type="product", price=9.5, quantity=2)
    return sdk.PixelProperties(contents=[content], currency="USD", value=19.0)


def check_2_0(event: dict[str, Any], number: int) -> None:
    assert event["event_source"] == "web" and event["event_source_id"] == PIXEL
    assert event["user"] == {
        "ttclid": f"E.C.P.sdk{number}",
        "email": [EMAIL_SHA],
        "phone": [PHONE_SHA],
        "external_id": [sha256_hex("user_123")],
        "user_agent": "Mozilla/5.0 sdk",
        "ip": "203.0.113.9",
    }
    assert event["page"] == {"url": f"https://shop.example/p/{number}"}
    assert event["properties"] == {
        "contents": [{"content_id": "SKU_1", "price": 9.5, "quantity": 2}],
        "content_type": "product",
        "currency": "USD",
        "value": 19.0,
    }
    for key in ("pixel_code", "context", "timestamp", "type"):
        assert key not in event


def test_the_official_sdk_pixel_track_and_batch(events_api: Any, fake_api: FakeEventsApi) -> None:
    at = datetime.fromtimestamp(int(time.time()) - 30, UTC).isoformat()
    body = sdk.PixelTrackBody(
        pixel_code=PIXEL,
        event="CompletePayment",
        event_id="sdk-0",
        timestamp=at,
        context=context(0),
        properties=properties(),
    )
    answer = events_api.pixel_track(TOKEN, body=body)  # the SDK raises on any code but 0
    assert set(answer) == {"data", "request_id"}

    batch = [
        sdk.PixelbatchBatch(type="track", event="AddToCart", event_id=f"sdk-{n}", timestamp=at,
                            context=context(n), properties=properties())
        for n in (1, 2)
    ]  # fmt: skip
    events_api.pixel_batch(TOKEN, body=sdk.PixelBatchBody(pixel_code=PIXEL, batch=batch))

    events = delivered(fake_api, 3)
    assert [e["event_id"] for e in events] == ["sdk-0", "sdk-1", "sdk-2"]
    assert [e["event"] for e in events] == ["CompletePayment", "AddToCart", "AddToCart"]
    assert {e["event_time"] for e in events} == {int(datetime.fromisoformat(at).timestamp())}
    for number, event in enumerate(events):
        check_2_0(event, number)


def test_the_official_sdk_sees_a_wrong_token_as_tiktoks_40105(
    events_api: Any, fake_api: FakeEventsApi
) -> None:
    body = sdk.PixelTrackBody(pixel_code=PIXEL, event="Lead", event_id="x", context=context(0))
    with pytest.raises(TiktokSDKError, match="Error Code: 40105"):
        events_api.pixel_track("not-the-token", body=body)
    # the sentinel: the same call with the right token is delivered, once
    events_api.pixel_track(TOKEN, body=body)
    assert [e["event_id"] for e in delivered(fake_api, 1)] == ["x"]


def test_the_official_sdk_client_on_the_2_0_path(events_api: Any, fake_api: FakeEventsApi) -> None:
    client = events_api.api_client
    body = {
        "event_source": "web",
        "event_source_id": PIXEL,
        "data": [
            {
                "event": "Purchase",
                "event_id": 7001,
                "event_time": (int(time.time()) - 30) * 1000,
                "user": {
                    "ttclid": "E.C.P.sdk0",
                    "email": "alice@example.com",
                    "phone": PHONE_SHA,
                    "external_id": "user_123",
                    "user_agent": "Mozilla/5.0 sdk",
                    "ip": "203.0.113.9",
                },
                "page": {"url": "https://shop.example/p/0"},
                "properties": {
                    "contents": [{"content_id": "SKU_1", "price": 9.5, "quantity": 2}],
                    "content_type": "product",
                    "currency": "USD",
                    "value": 19.0,
                },
            }
        ],
    }
    answer = client.call_api(
        "/open_api/v1.3/event/track/",
        "POST",
        header_params={"Access-Token": TOKEN, "Content-Type": "application/json"},
        body=body,
        response_type="InlineResponse200",
        _return_http_data_only=True,
    )
    assert set(answer) == {"data", "request_id"}
    [event] = delivered(fake_api, 1)
    assert event["event_id"] == "7001"
    check_2_0(event, 0)


CLIENTS = Path(__file__).parent.parent / ".venv-clients" / "bin" / "python"


def test_pytt_events_api_batch_and_single_calls_are_accepted(
    serve_gateway: Callable[..., GatewayServer], fake_api: FakeEventsApi
) -> None:
    """`pytt-events-api` repeats `pixel_code` in each element of `batch[]` (issue 22): the
    relay accepts what the request names already, as TikTok does."""
    assert CLIENTS.exists(), "./scripts/test installs the published clients in .venv-clients"
    server = serve_gateway()
    script = Path(__file__).parent / "clients" / "pytt_send.py"
    result = subprocess.run(
        [str(CLIENTS), str(script), server.url, TOKEN, PIXEL],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "sent", result.stderr
    events = delivered(fake_api, 3)
    assert [e["event_id"] for e in events] == ["pytt-1", "pytt-2", "pytt-3"]
    for number, event in enumerate(events, start=1):
        assert event["user"]["email"] == [EMAIL_SHA]  # hashed by the client, passed through
        assert event["user"]["ttclid"] == f"E.C.P.pytt{number}"
        assert event["properties"]["value"] == 19.0


def test_a_batch_element_naming_another_pixel_is_refused_naming_it(
    serve_gateway: Callable[..., GatewayServer],
) -> None:
    server = serve_gateway()
    body = {
        "pixel_code": PIXEL,
        "batch": [
            {"pixel_code": PIXEL, "event": "ViewContent", "event_id": "b-1",
             "context": {"page": {"url": "https://shop.example/"}}},
            {"pixel_code": "COTHERPIXEL", "event": "ViewContent", "event_id": "b-2",
             "context": {"page": {"url": "https://shop.example/"}, "unknown_thing": 1}},
        ],
    }  # fmt: skip
    answer = httpx.post(
        f"{server.url}/open_api/v1.3/pixel/batch/", json=body, headers={"Access-Token": TOKEN}
    ).json()
    assert answer["code"] == 40002 and answer["message"].startswith("batch[1].pixel_code:")


def test_fields_no_mapping_reads_are_ignored_and_counted(
    serve_gateway: Callable[..., GatewayServer], fake_api: FakeEventsApi
) -> None:
    server = serve_gateway()
    body = {
        "pixel_code": PIXEL,
        "sdk_version": "9.9",
        "batch": [
            {"event": "ViewContent", "event_id": "i-1", "extra": {"secret": "alice@example.com"},
             "context": {"page": {"url": "https://shop.example/"}, "device": {"os": "x"},
                         "user": {"email": "a@example.com", "hobby": "chess"}}},
        ],
    }  # fmt: skip
    answer = httpx.post(
        f"{server.url}/open_api/v1.3/pixel/batch/", json=body, headers={"Access-Token": TOKEN}
    ).json()
    assert answer["code"] == 0, answer
    [event] = delivered(fake_api, 1)
    assert "extra" not in event and "hobby" not in event["user"]
    metrics = httpx.get(server.metrics_url).text
    assert 'tiktok_gateway_relay_fixups_total{kind="unknown_field_ignored"} 4.0' in metrics
