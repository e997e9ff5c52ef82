"""Operator commands on the outbox: see what waits, replay dead letters, purge old ones.

They open the outbox beside a running gateway (SQLite without taking its lock, Redis as
one more client) and never claim events, so they are safe while the gateway delivers.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from gateway.outbox import Outbox, OutboxCounts, open_outbox
from gateway.settings import Settings


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


async def _with_outbox(settings: Settings) -> Outbox:
    outbox = open_outbox(settings.outbox, owner=False)
    await outbox.open()
    return outbox


async def outbox_report(settings: Settings, *, dead: int = 0) -> dict[str, Any]:
    outbox = await _with_outbox(settings)
    try:
        counts = await outbox.counts(time.time())
        letters = await outbox.dead_letters(dead) if dead else []
    finally:
        await outbox.close()
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
            }
            for d in letters
        ],
    }


async def replay(settings: Settings, *, pixel: str | None, code: int | None) -> int:
    outbox = await _with_outbox(settings)
    try:
        return await outbox.replay(pixel=pixel, code=code)
    finally:
        await outbox.close()


async def purge_dead(settings: Settings, *, older_than_days: float) -> int:
    outbox = await _with_outbox(settings)
    try:
        return await outbox.purge_dead(time.time() - older_than_days * 86400)
    finally:
        await outbox.close()
