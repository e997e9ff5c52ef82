"""The console's postback view: each postback, the rules it fired or why not, its events.

Read from the postback log (`storage/postback_log.py`, in the outbox's backend: with Redis
every replica's), newest first, for one source or all. Each entry adds what the log alone
does not say: how the trigger was found (given, mapped by the source's `triggers`, or
absent), the source's renames (`payout → price`), and what became of each stored event so
far (from the recent buffer). Identifiers are hashed already; digests are shortened.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway.privacy.masking import short
from gateway.settings import PostbackSource
from gateway.storage.postback_log import PostbackLog
from gateway.telemetry.recent import RecentEvents

MAX_SHOWN = 200
_DIGEST = re.compile(r"[0-9a-f]{64}")


def trigger_from(source: PostbackSource | None, entry: Mapping[str, Any]) -> str:
    """Where the entry's trigger came from: "given", "absent", or the source's own field
    and value that its `triggers` table maps (`status=1`)."""
    trigger = entry.get("trigger")
    if not trigger:
        return "absent"
    fields = entry.get("fields") or {}
    if source is not None:
        for name, mapping in source.triggers.items():
            value = fields.get(name)
            if value is not None and mapping.get(value) == trigger:
                theirs = next((t for t, ours in source.rename.items() if ours == name), name)
                return f"{theirs}={value}"
    return "given"


def _delivery(recent: RecentEvents, pixel: str, name: str, event_id: str) -> dict[str, Any]:
    trace = recent.find(pixel, name, event_id)
    if trace is None:
        return {"state": "not in the recent buffer"}
    shown: dict[str, Any] = {"state": trace.state}
    if trace.steps:
        last = trace.steps[-1]
        shown.update(code=last.code, message=last.message, request_id=last.request_id)
    return shown


def shown_entry(
    entry: dict[str, Any], source: PostbackSource | None, recent: RecentEvents
) -> dict[str, Any]:
    fired = [
        {
            "rule": rule["rule"],
            "events": [
                {**event, **_delivery(recent, event["pixel"], event["event"], event["event_id"])}
                for event in rule["events"]
            ],
        }
        for rule in entry.get("fired", ())
    ]
    fields = {
        name: short(value) if _DIGEST.fullmatch(value) else value
        for name, value in (entry.get("fields") or {}).items()
    }
    return {
        "at": entry.get("at"),
        "source": entry.get("source"),
        "trigger": entry.get("trigger"),
        "trigger_from": trigger_from(source, entry),
        "renamed": dict(source.rename) if source is not None else {},
        "ttclid": entry.get("ttclid"),
        "stored": entry.get("stored", 0),
        "fired": fired,
        "not_fired": list(entry.get("not_fired", ())),
        "fields": fields,
    }


async def last_postbacks(
    journal: PostbackLog,
    sources: Mapping[str, PostbackSource],
    recent: RecentEvents,
    *,
    source: str | None,
    count: int,
) -> dict[str, Any]:
    """The last `count` postbacks of `source` (or of every source), newest first."""
    if not journal.size:
        return {"enabled": False, "sources": sorted(sources), "postbacks": []}
    await journal.flush()  # what the endpoint queued a moment ago is shown too
    names = [source] if source is not None else sorted(sources)
    entries: list[dict[str, Any]] = []
    for name in names:
        entries.extend(await journal.backend.last(name, count))
    entries.sort(key=lambda e: e.get("at") or 0, reverse=True)
    return {
        "enabled": True,
        "sources": sorted(sources),
        "postbacks": [
            shown_entry(e, sources.get(e.get("source", "")), recent) for e in entries[:count]
        ],
    }
