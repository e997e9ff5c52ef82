"""Events sent to the Events API now, past the outbox: checks a person is waiting on.

`send-test`, `postback-test --send` and the console's send-test form all send through
`send_now`: one request, TikTok's answer returned as an `Outcome`, nothing stored, nothing
retried. The event is built by the same parser as live events (`build_test_body`), so what
a check sends is what the gateway would send.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import ConfigError, EventError
from gateway.core.event import request_body
from gateway.delivery.client import TRACK_PATH, EventsApiClient, Outcome
from gateway.ingest.parser import ParseRules
from gateway.ingest.pipeline import parse_item
from gateway.ingest.policy import SERVER, Item
from gateway.settings import PixelConfig, Settings, pick_pixel


async def send_now(
    settings: Settings,
    body: dict[str, Any],
    pixel: PixelConfig,
    *,
    client: EventsApiClient | None = None,
) -> Outcome:
    """POST one Events API body with `pixel`'s token now; a client of our own when none."""
    own = client is None
    client = client or EventsApiClient.from_settings(settings)
    try:
        return await client.send_body(body, pixel.access_token)
    finally:
        if own:
            await client.aclose()


@dataclass(frozen=True)
class TestEvent:
    """What the user asked `send-test` to send; every field optional but the event name."""

    event: str
    email: str | None = None
    phone: str | None = None
    external_id: str | None = None
    ttclid: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    url: str | None = None
    value: str | None = None
    currency: str | None = None
    test_event_code: str | None = None
    pixel: str | None = None


@dataclass(frozen=True)
class SendTestResult:
    body: dict[str, Any]
    outcome: Outcome
    warnings: list[str]
    url: str = ""
    """Where the body was sent (`api_base` and the track path)."""

    def explanation(self) -> str:
        """One line for a human: what happened and, on failure, what to check."""
        o = self.outcome
        if o.delivered:
            return f"delivered: TikTok answered code {o.code} ({o.message})"
        if o.http_status is None and o.code is None:  # no answer at all
            return (
                f"could not reach the Events API at {self.url}: {o.message}; check the "
                "network, and api_base (TIKTOK_API_BASE) if it should point elsewhere"
            )
        if o.code == 40105:
            return (
                f"the access token was rejected (TikTok code 40105: {o.message}); "
                "check TIKTOK_ACCESS_TOKEN or the pixel's access_token"
            )
        if o.code == 40001:
            return (
                f"the access token may not send for this pixel (code 40001: {o.message}); "
                "generate the token from this pixel's Events Manager settings"
            )
        code = f"code {o.code}" if o.code is not None else f"HTTP {o.http_status or '-'}"
        return f"{o.kind.value}: {code}: {o.message}"


def _pick_pixel(settings: Settings, pixel_id: str | None) -> PixelConfig:
    """The pixel asked for, by default the first configured one; ConfigError in the
    command's words."""
    try:
        return pick_pixel(settings.pixels_by_id, pixel_id, "--pixel", first=True)
    except EventError:
        known = ", ".join(settings.pixels_by_id)
        problem = f"--pixel: {pixel_id} is not configured (configured: {known})"
        raise ConfigError([problem]) from None


def build_test_body(
    settings: Settings, test: TestEvent
) -> tuple[PixelConfig, dict[str, Any], list[str]]:
    """The request body `send-test` sends, through the same parser as live events."""
    pixel = _pick_pixel(settings, test.pixel)
    user = {
        key: value
        for key, value in (
            ("email", test.email),
            ("phone", test.phone),
            ("external_id", test.external_id),
            ("ttclid", test.ttclid),
            ("ip", test.ip),
            ("user_agent", test.user_agent),
        )
        if value
    }
    properties = {"value": test.value, "currency": test.currency} if test.value else {}
    url = test.url or (pixel.origins[0] + "/" if pixel.origins else None)
    raw: dict[str, Any] = {
        "event": test.event,
        "event_id": f"send-test-{uuid.uuid4()}",
        "user": user,
        "properties": properties,
    }
    if url:
        raw["page"] = {"url": url}
    parsed = parse_item(
        Item(raw, pixel, test_event_code=test.test_event_code),
        ParseRules.from_settings(settings),
        SERVER,
        time.time(),
    )
    first = parsed.events[0]
    return pixel, request_body(first.destination, parsed.events), parsed.warnings


async def send_test(
    settings: Settings, test: TestEvent, *, client: EventsApiClient | None = None
) -> SendTestResult:
    """One event built from `test` and sent now; TikTok's answer with the body it judged."""
    pixel, body, warnings = build_test_body(settings, test)
    outcome = await send_now(settings, body, pixel, client=client)
    url = f"{settings.api_base}{TRACK_PATH}"
    return SendTestResult(body=body, outcome=outcome, warnings=warnings, url=url)
