"""`tiktok-gateway send-test`: build one event exactly as the gateway would and send it now.

This is the first thing a user runs against a new pixel, so its answer must be plain: the
body that was sent (identifiers already hashed, the token never shown) and what TikTok said,
with a hint when the token, the pixel or the way to the API is the problem. An email that
is no email is refused before anything is sent (its hash would match nobody).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import sys
from typing import Any

from gateway.cli.common import EXIT_FAILED, Commands, add_config, command, settings_of
from gateway.core.score import MAX_SCORE, keys_present, score
from gateway.delivery.send_now import SendTestResult, TestEvent, send_test

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _email(text: str) -> str:
    """An address (name@domain.tld) or its SHA-256; the value itself is never echoed."""
    if _EMAIL.fullmatch(text.strip()) or _SHA256.fullmatch(text.strip()):
        return text
    raise argparse.ArgumentTypeError("is not an email address (name@example.com) nor a SHA-256")


def register(commands: Commands) -> None:
    test = command(
        commands,
        "send-test",
        "send one event straight to the Events API and print the answer",
        description="The event is built as the gateway builds live ones (identifiers hashed) "
        "and sent now, past the outbox. Exit status 0: TikTok accepted it; 1: it did not, or "
        "it could not be reached (the reason and what to check are printed).",
    )
    add_config(test)
    test.add_argument("--event", required=True, help="event name, e.g. Purchase or purchase")
    test.add_argument("--email", type=_email, help="the visitor's email (sent hashed)")
    test.add_argument("--phone", help="the visitor's phone, e.g. +14155550100 (sent hashed)")
    test.add_argument("--external-id", help="your id of the visitor (sent hashed)")
    test.add_argument("--ttclid", help="the TikTok click id of an ad click")
    test.add_argument("--ip", help="the visitor's IP address")
    test.add_argument("--user-agent", help="the visitor's browser user agent")
    test.add_argument("--url", help="page URL (web events need one)")
    test.add_argument("--value", help="order value, e.g. 19.99 (with --currency)")
    test.add_argument("--currency", help="ISO 4217 currency of --value, e.g. USD")
    test.add_argument("--test-event-code", help="code from Events Manager > Test events")
    test.add_argument("--pixel", help="pixel id (default: the first configured pixel)")
    test.add_argument(
        "--json", action="store_true", help="print one JSON object: request, body, answer"
    )
    test.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    wanted = {f.name for f in dataclasses.fields(TestEvent)}
    test = TestEvent(**{k: v for k, v in vars(args).items() if k in wanted})
    result = asyncio.run(send_test(settings, test))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:  # stdout is the JSON alone; a failure is also told on stderr
        print(json.dumps(_as_json(result), indent=2))
    else:
        _print(result)
    if not (args.json and result.outcome.delivered):
        print(result.explanation(), file=sys.stdout if result.outcome.delivered else sys.stderr)
    return 0 if result.outcome.delivered else EXIT_FAILED


def _answer(result: SendTestResult) -> dict[str, Any]:
    return {
        "code": result.outcome.code,
        "message": result.outcome.message,
        "request_id": result.outcome.request_id,
        "http_status": result.outcome.http_status,
    }


def _as_json(result: SendTestResult) -> dict[str, Any]:
    user = result.body["data"][0].get("user", {})
    return {
        "delivered": result.outcome.delivered,
        "url": result.url,
        "body": result.body,
        "answer": _answer(result),
        "match_key_score": {"score": score(user), "max": MAX_SCORE, "keys": keys_present(user)},
        "warnings": result.warnings,
        "explanation": result.explanation(),
    }


def _print(result: SendTestResult) -> None:
    print(f"POST {result.url}")
    print(json.dumps(result.body, indent=2))
    print("TikTok answered:", json.dumps(_answer(result)))
    user = result.body["data"][0].get("user", {})
    keys = ", ".join(keys_present(user)) or "none"
    print(f"match-key score: {score(user)}/{MAX_SCORE} (keys: {keys}; the gateway's estimate)")
