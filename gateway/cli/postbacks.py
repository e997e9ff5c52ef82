"""`tiktok-gateway postbacks SOURCE --last 20`: the last postbacks and what each became.

Read from the outbox's backend beside a running gateway. For a SQLite outbox each event
id is also looked up in the outbox, which tells TikTok's answer so far: still waiting,
dead-lettered with TikTok's reason, or gone from the outbox (delivered).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from gateway.cli.common import Commands, add_config, settings_of
from gateway.cli.common import command as new_command
from gateway.settings import Settings
from gateway.storage.backend import open_backend
from gateway.storage.outbox import Outbox
from gateway.storage.outbox.sqlite import SqliteOutbox


def register(commands: Commands) -> None:
    command = new_command(
        commands,
        "postbacks",
        "show the last postbacks of a source and what each became",
        description="Read beside the running gateway; with a SQLite outbox each event also "
        "says whether it waits, was dead-lettered (with TikTok's reason) or was delivered.",
    )
    command.add_argument("source", help="a source under [postbacks.sources]")
    command.add_argument(
        "--last", type=int, default=20, metavar="N", help="how many, newest first (default 20)"
    )
    command.add_argument("--json", action="store_true", help="one JSON entry per line")
    add_config(command)
    command.set_defaults(run=run)


async def last_postbacks(settings: Settings, source: str, count: int) -> list[dict[str, Any]]:
    backend = open_backend(settings.outbox, owner=False)
    try:
        await backend.outbox.open()
        journal = backend.postback_log(settings.postbacks.log_size)
        await journal.backend.prepare()  # a file no gateway logged a postback in yet
        entries = await journal.backend.last(source, count)
        await _with_delivery(backend.outbox, entries)
    finally:
        await backend.close()
    return entries


async def _with_delivery(outbox: Outbox, entries: list[dict[str, Any]]) -> None:
    if not isinstance(outbox, SqliteOutbox):
        return
    ids = [e["event_id"] for entry in entries for f in entry["fired"] for e in f["events"]]

    def read(conn: Any) -> dict[str, str]:
        found = {}
        listed = json.dumps(ids)
        for (event_id,) in conn.execute(
            "SELECT event_id FROM events WHERE event_id IN (SELECT value FROM json_each(?))",
            (listed,),
        ):
            found[event_id] = "waiting"
        for event_id, code, reason in conn.execute(
            "SELECT event_id, code, reason FROM dead_letters "
            "WHERE event_id IN (SELECT value FROM json_each(?))",
            (listed,),
        ):
            found[event_id] = f"dead letter: {code} {reason}"
        return found

    states = await outbox.writer.read(read)
    for entry in entries:
        for fired in entry["fired"]:
            for event in fired["events"]:
                event["tiktok"] = states.get(event["event_id"], "delivered")


def describe(entry: dict[str, Any]) -> str:
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry["at"]))
    lines = [f"{at}  {entry['trigger'] or '(no trigger)'}  ttclid: {entry['ttclid']}"]
    for fired in entry["fired"]:
        for event in fired["events"]:
            state = f"  [{event['tiktok']}]" if "tiktok" in event else ""
            lines.append(f"    fired {fired['rule']}: {event['event']} {event['event_id']}{state}")
    if not entry["fired"]:
        lines.append("    nothing fired")
    lines.extend(f"    not {u['rule']}: {u['reason']}" for u in entry["not_fired"])
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args, secrets=False)
    entries = asyncio.run(last_postbacks(settings, args.source, args.last))
    for entry in entries:
        print(json.dumps(entry) if args.json else describe(entry))
    if not entries and not args.json:
        print(f"no postbacks logged for {args.source!r}")
    return 0
