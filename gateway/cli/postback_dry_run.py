"""`tiktok-gateway postback-test SOURCE 'trigger=lead_sold&lead_id=…&price=…'`: what a
postback would become, without a lead system and without storing anything.

It runs the endpoint's rules and parser and prints the rules that matched, those that did
not with the first condition that failed, and the exact Events API JSON (identifiers hashed).
`--send` sends it with a test event code (Events Manager's *Test events* tab) and prints
TikTok's answer. The lead context lives in the running gateway, so it is not filled in here:
pass `ttclid`, `url`, `ip` or `user_agent` to see them in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from gateway.cli.common import EXIT_FAILED, Commands, add_config, settings_of
from gateway.cli.common import command as new_command
from gateway.delivery.client import TRACK_PATH, EventsApiClient
from gateway.delivery.send_now import send_now
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.sources.postback.process import PostbackProcessor, PostbackResult
from gateway.ingest.sources.postback.request import our_fields, query_fields
from gateway.settings import Settings
from gateway.storage.backend import open_backend
from gateway.telemetry.metrics import Metrics


def register(commands: Commands) -> None:
    command = new_command(
        commands,
        "postback-test",
        "show what a postback would become (--send: send it as a test)",
        description="Runs the source's rules and parser; nothing is stored. The lead context "
        "lives in the running gateway: pass ttclid, url, ip or user_agent to see them.",
    )
    command.add_argument("source", help="a source under [postbacks.sources]")
    command.add_argument("postback", help="its parameters as a query string: 'a=1&b=2'")
    command.add_argument("--send", action="store_true", help="send to TikTok as test events")
    command.add_argument("--test-event-code", help="default: the pixel's test_event_code")
    add_config(command)
    command.set_defaults(run=run)


async def evaluate(settings: Settings, source_name: str, query: str) -> PostbackResult:
    """The postback's outcome as the endpoint would compute it, nothing stored."""
    source = settings.postbacks.sources.get(source_name)
    if source is None:
        known = ", ".join(settings.postbacks.sources) or "none configured"
        raise LookupError(f"no postback source {source_name!r} ({known})")
    backend = open_backend(settings.outbox, owner=False)  # never opened: nothing is stored
    try:
        pipeline = Pipeline(settings, backend.outbox, Metrics())
        fields = our_fields(source, query_fields(query.lstrip("?")))
        return await PostbackProcessor(pipeline).process(
            source, fields, settings.postbacks.rules, store=False
        )
    finally:
        await backend.close()


async def send(settings: Settings, requests: list[dict[str, Any]], code: str | None) -> bool:
    delivered = True
    async with EventsApiClient.from_settings(settings) as client:
        for body in requests:
            pixel = settings.pixel(body["event_source_id"])
            test_code = code or pixel.test_event_code
            if not test_code:
                print("--send needs a test event code (--test-event-code)", file=sys.stderr)
                return False
            body["test_event_code"] = test_code
            outcome = await send_now(settings, body, pixel, client=client)
            print(f"POST {settings.api_base}{TRACK_PATH} ({pixel.id}, test {test_code})")
            answer = {"code": outcome.code, "message": outcome.message}
            print("TikTok answered:", json.dumps(answer))
            delivered = delivered and outcome.delivered
    return delivered


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    try:
        outcome = asyncio.run(evaluate(settings, args.source, args.postback))
    except LookupError as exc:
        print(exc.args[0], file=sys.stderr)
        return EXIT_FAILED
    for fired in outcome.fired:
        names = ", ".join(f"{e.event} (event_id {e.event_id})" for e in fired.events)
        print(f"matched  {fired.rule}: {names}")
    for unmatched in outcome.unmatched:
        word = "skipped" if unmatched.skipped else "no match"
        print(f"{word:8} {unmatched.rule}: {unmatched.reason}")
    print(f"ttclid: {outcome.click}")
    requests = outcome.answer(requests=True, masked=False)["requests"]
    if not requests:
        print("nothing would be sent")
        return 0
    print(json.dumps(requests, indent=2))
    if args.send:
        return 0 if asyncio.run(send(settings, requests, args.test_event_code)) else EXIT_FAILED
    return 0
