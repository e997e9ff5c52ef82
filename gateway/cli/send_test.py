"""`tiktok-gateway send-test`: build one event exactly as the gateway would and send it now.

This is the first thing a user runs against a new pixel, so its answer must be plain: the
body that was sent (identifiers already hashed, the token never shown) and what TikTok said,
with a hint when the token or the pixel is the problem.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

from gateway.cli.common import EXIT_FAILED, Commands, add_config, settings_of
from gateway.core.errors import ConfigError
from gateway.core.event import request_body
from gateway.core.score import MAX_SCORE, keys_present, score
from gateway.delivery.client import TRACK_PATH, EventsApiClient, Outcome
from gateway.ingest.parser import ParseRules, parse_event
from gateway.settings import PixelConfig, Settings


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

    def explanation(self) -> str:
        """One line for a human: what happened and, on failure, what to check."""
        o = self.outcome
        if o.delivered:
            return f"delivered: TikTok answered code {o.code} ({o.message})"
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
    if pixel_id is None:
        return settings.pixels[0]
    pixel = settings.pixel(pixel_id)
    if pixel is None:
        known = ", ".join(p.id for p in settings.pixels)
        raise ConfigError([f"--pixel: {pixel_id} is not configured (configured: {known})"])
    return pixel


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
    parsed = parse_event(
        raw,
        pixel=pixel,
        rules=ParseRules.from_settings(settings),
        now=time.time(),
        test_event_code=test.test_event_code,
    )
    first = parsed.events[0]
    return pixel, request_body(first.destination, parsed.events), parsed.warnings


async def send_test(
    settings: Settings, test: TestEvent, *, client: EventsApiClient | None = None
) -> SendTestResult:
    pixel, body, warnings = build_test_body(settings, test)
    own = client is None
    client = client or EventsApiClient.from_settings(settings)
    try:
        outcome = await client.send_body(body, pixel.access_token)
    finally:
        if own:
            await client.aclose()
    return SendTestResult(body=body, outcome=outcome, warnings=warnings)


def register(commands: Commands) -> None:
    test = commands.add_parser(
        "send-test", help="send one event straight to the Events API and print the answer"
    )
    add_config(test)
    test.add_argument("--event", required=True, help="event name, e.g. Purchase or purchase")
    for option in ("--email", "--phone", "--external-id", "--ttclid", "--ip", "--user-agent"):
        test.add_argument(option)
    test.add_argument("--url", help="page URL (web events need one)")
    test.add_argument("--value")
    test.add_argument("--currency")
    test.add_argument("--test-event-code", help="code from Events Manager > Test events")
    test.add_argument("--pixel", help="pixel id (default: the first configured pixel)")
    test.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    wanted = {f.name for f in dataclasses.fields(TestEvent)}
    test = TestEvent(**{k: v for k, v in vars(args).items() if k in wanted})
    result = asyncio.run(send_test(settings, test))
    print(f"POST {settings.api_base}{TRACK_PATH}")
    print(json.dumps(result.body, indent=2))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    answer = {
        "code": result.outcome.code,
        "message": result.outcome.message,
        "request_id": result.outcome.request_id,
        "http_status": result.outcome.http_status,
    }
    print("TikTok answered:", json.dumps(answer))
    user = result.body["data"][0].get("user", {})
    keys = ", ".join(keys_present(user)) or "none"
    print(f"match-key score: {score(user)}/{MAX_SCORE} (keys: {keys}; the gateway's estimate)")
    print(result.explanation(), file=sys.stdout if result.outcome.delivered else sys.stderr)
    return 0 if result.outcome.delivered else EXIT_FAILED
