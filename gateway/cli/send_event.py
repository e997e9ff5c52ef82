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

from gateway.cli.common import EXIT_FAILED, Commands, add_config, settings_of
from gateway.core.score import MAX_SCORE, keys_present, score
from gateway.delivery.client import TRACK_PATH
from gateway.delivery.send_now import TestEvent, send_test


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
