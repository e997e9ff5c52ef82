"""`outbox`, `replay`, `purge-dead`: see what waits, replay dead letters, purge old ones.

They open the outbox beside a running gateway (SQLite without taking its lock, Redis as
one more client) and never claim events, so they are safe while the gateway delivers. They
send nothing, so a token whose variable or file is missing here does not stop them.
`outbox backup PATH` is in `outbox_backup.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from gateway.cli import outbox_backup
from gateway.cli.common import Commands, add_config, command, settings_of
from gateway.settings import Settings
from gateway.storage.backend import open_backend
from gateway.storage.outbox import Outbox, OutboxCounts


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def format_counts(counts: OutboxCounts) -> str:
    rows = [("", "pending", "retrying", "in flight", "dead", "oldest")]
    rows.append(
        (
            "total",
            str(counts.pending),
            str(counts.retrying),
            str(counts.in_flight),
            str(counts.dead),
            _age(counts.oldest_age_seconds),
        )
    )
    for pixel, per in sorted(counts.pixels.items()):
        rows.append(
            (
                pixel,
                str(per.pending),
                str(per.retrying),
                str(per.in_flight),
                str(per.dead),
                _age(per.oldest_age_seconds),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


@contextlib.asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Outbox]:
    """The outbox opened beside any gateway running on it (no lock taken), then closed."""
    backend = open_backend(settings.outbox, owner=False)
    try:
        await backend.outbox.open()
        yield backend.outbox
    finally:
        await backend.close()


async def outbox_report(settings: Settings, *, dead: int = 0) -> dict[str, Any]:
    async with opened(settings) as outbox:
        counts = await outbox.counts(time.time())
        letters = await outbox.dead_letters(dead) if dead else []
    return {
        "counts": counts,
        "table": format_counts(counts),
        "json": asdict(counts),
        "dead_letters": [
            {
                "id": d.id,
                "pixel": d.event.destination.event_source_id,
                "event": d.event.event,
                "event_id": d.event.event_id,
                "code": d.code,
                "reason": d.reason,
                "attempts": d.attempts,
                "dead_at": d.dead_at,
                "request_id": d.request_id,
            }
            for d in letters
        ],
    }


async def replay(
    settings: Settings, *, pixel: str | None, code: int | None, dry_run: bool = False
) -> int:
    async with opened(settings) as outbox:
        return await outbox.replay(pixel=pixel, code=code, dry_run=dry_run)


async def purge_dead(settings: Settings, *, older_than_days: float, dry_run: bool = False) -> int:
    async with opened(settings) as outbox:
        return await outbox.purge_dead(time.time() - older_than_days * 86400, dry_run=dry_run)


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if days < 0:
        raise argparse.ArgumentTypeError("must be 0 or more days")
    return days


def register(commands: Commands) -> None:
    outbox = command(
        commands,
        "outbox",
        "show what waits in the outbox, per pixel (or back it up: outbox backup PATH)",
    )
    add_config(outbox)
    outbox.add_argument(
        "--dead", type=int, default=0, metavar="N", help="list the N newest dead letters"
    )
    outbox.add_argument("--json", action="store_true", help="print JSON")
    outbox.set_defaults(run=run_outbox)
    actions = outbox.add_subparsers(
        dest="action", metavar="ACTION", help="backup PATH: copy the outbox (none: show it)"
    )
    outbox_backup.register(actions)

    replay_command = command(
        commands,
        "replay",
        "move dead letters back to pending, to be delivered again",
        description="Replay once the cause is fixed (a token, a field): letters refused "
        "for the same reason come back otherwise.",
    )
    add_config(replay_command)
    replay_command.add_argument("--pixel", help="only this pixel's dead letters")
    replay_command.add_argument("--code", type=int, help="only dead letters with this TikTok code")
    _add_dry_run_and_json(replay_command, "count what would move back, move nothing")
    replay_command.set_defaults(run=run_replay)

    purge = command(commands, "purge-dead", "delete old dead letters")
    add_config(purge)
    purge.add_argument(
        "--older-than",
        type=_days,
        required=True,
        metavar="DAYS",
        help="delete dead letters that died more than DAYS days ago (0: all of them)",
    )
    _add_dry_run_and_json(purge, "count what would be deleted, delete nothing")
    purge.set_defaults(run=run_purge_dead)


def _add_dry_run_and_json(parser: argparse.ArgumentParser, dry_run: str) -> None:
    parser.add_argument("--dry-run", action="store_true", help=dry_run)
    parser.add_argument("--json", action="store_true", help="print the count as JSON")


def run_outbox(args: argparse.Namespace) -> int:
    report = asyncio.run(outbox_report(settings_of(args, secrets=False), dead=args.dead))
    if args.json:
        print(
            json.dumps({"counts": report["json"], "dead_letters": report["dead_letters"]}, indent=2)
        )
        return 0
    print(report["table"])
    for letter in report["dead_letters"]:
        print(
            f"dead {letter['id']}: pixel {letter['pixel']} {letter['event']} "
            f"event_id={letter['event_id']} after {letter['attempts']} attempt(s): "
            f"{letter['reason']}"
            + (f" (TikTok request_id {letter['request_id']})" if letter["request_id"] else "")
        )
    return 0


def run_replay(args: argparse.Namespace) -> int:
    settings = settings_of(args, secrets=False)
    moved = asyncio.run(replay(settings, pixel=args.pixel, code=args.code, dry_run=args.dry_run))
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "replayed": moved}))
    elif args.dry_run:
        print(f"{moved} dead letter(s) would move back to pending (dry run: nothing changed)")
    else:
        print(f"{moved} dead letter(s) moved back to pending")
    return 0


def run_purge_dead(args: argparse.Namespace) -> int:
    settings = settings_of(args, secrets=False)
    days = args.older_than
    removed = asyncio.run(purge_dead(settings, older_than_days=days, dry_run=args.dry_run))
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "older_than_days": days, "deleted": removed}))
    elif args.dry_run:
        print(
            f"{removed} dead letter(s) older than {days:g} day(s) would be deleted "
            "(dry run: nothing changed)"
        )
    else:
        print(f"{removed} dead letter(s) older than {days:g} day(s) deleted")
    return 0
