"""The console's search: what happened to event_id X, or order_id Y, wherever it is kept.

One answer from every place an event is kept: the recent buffer (accepted events and each
step of their delivery, delivered ones included), the recent drops (dropped and refused
events, with the reason), and the outbox (pending, in flight, retrying, dead-lettered).
Each place keeps events for its own time; docs/console.md#search says how long.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.console.view import drop_row, row
from gateway.storage.outbox.base import Stored

if TYPE_CHECKING:
    from gateway.runtime import Gateway

MAX_QUERY = 128
MAX_FOUND = 50


async def search(gateway: Gateway, wanted: str) -> dict[str, Any]:
    """Every match of `wanted` (an event_id or an order_id), newest first in each place."""
    recent = [{"where": "recent", **row(trace)} for trace in gateway.recent.search(wanted)]
    drops = [{"where": "dropped", **drop_row(drop)} for drop in gateway.drops.search(wanted)]
    stored = await gateway.outbox.find(wanted, MAX_FOUND)
    return {
        "query": wanted,
        "found": [*recent[:MAX_FOUND], *drops[:MAX_FOUND], *(_stored(s) for s in stored)],
    }


def _stored(found: Stored) -> dict[str, Any]:
    event = found.event
    return {
        "where": "outbox",
        "state": found.state,
        "pixel": event.destination.event_source_id,
        "event": event.event,
        "event_id": event.event_id,
        "order_id": str(event.properties.get("order_id") or ""),
        "at": found.at,
        "attempts": found.attempts,
        "why": found.reason,
        "code": found.code,
        "request_id": found.request_id,
    }
