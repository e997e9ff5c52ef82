"""`tiktok-gateway check-config`: validate the configuration, open the outbox, print both.

The outbox is opened as the operator commands open it (beside a running gateway, without
its lock), so an unusable path, a file in a newer format or an unreachable Redis is found
here, not at start-up; `--no-outbox` checks the file alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from gateway.cli.common import (
    EXIT_STORAGE,
    Commands,
    add_config,
    command,
    settings_of,
    storage_failure,
)
from gateway.cli.outbox import opened
from gateway.core.errors import OutboxUnavailable
from gateway.settings import Settings


def register(commands: Commands) -> None:
    check = command(
        commands,
        "check-config",
        "validate the configuration, open the outbox, and print both (secrets hidden)",
        description="Exit status 0: usable; 2: configuration errors (one line each); "
        "3: the outbox cannot be opened.",
    )
    add_config(check)
    check.add_argument(
        "--no-outbox", action="store_true", help="check the configuration only; leave the outbox"
    )
    check.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: configuration, warnings, outbox",
    )
    check.set_defaults(run=run)


async def outbox_state(settings: Settings) -> dict[str, Any]:
    """What the outbox holds now, opened beside any gateway running on it."""
    async with opened(settings) as outbox:
        counts = await outbox.counts(time.time())
    waiting = counts.pending + counts.retrying + counts.in_flight
    return {"opened": True, "waiting": waiting, "dead": counts.dead}


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    warnings = settings.warnings()
    url = settings.redacted()["outbox"]["url"]
    outbox: dict[str, Any] = {"url": url, "opened": False}
    status = 0
    if not args.no_outbox:
        try:
            outbox |= asyncio.run(outbox_state(settings))
        except OutboxUnavailable as exc:
            outbox["error"] = storage_failure(exc)
            status = EXIT_STORAGE
    if args.json:
        shown = {"configuration": settings.redacted(), "warnings": warnings, "outbox": outbox}
        print(json.dumps({"ok": status == 0, **shown}, indent=2))
    else:
        print(json.dumps(settings.redacted(), indent=2))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if "error" in outbox:
        print(outbox["error"], file=sys.stderr)
        return status
    if outbox["opened"]:
        print(
            f"outbox {url}: opened ({outbox['waiting']} event(s) waiting, "
            f"{outbox['dead']} dead letter(s))",
            file=sys.stderr,
        )
    print("configuration OK", file=sys.stderr)
    return status
