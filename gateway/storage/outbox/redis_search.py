"""`RedisOutbox.find`: an event_id or order_id looked up in the stream, retries and dead letters.

Redis has no index on either, so each key is read a page at a time (XREVRANGE, ZSCAN,
HSCAN), newest stream entries first; a record is parsed only when its text holds what is
wanted. An operator's question, never the hot path: other clients are served between pages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from gateway.core.event import Destination, Event
from gateway.storage.outbox.base import Stored

_PAGE = 1000


async def find(
    client: Any, stream: str, retry: str, dead: str, wanted: str, limit: int
) -> list[Stored]:
    """Matches in the stream (pending), the retries, then the dead letters."""
    found: list[Stored] = []
    high = "+"
    while len(found) < limit:
        entries = await client.xrevrange(stream, high, "-", count=_PAGE)
        found.extend(_matches((fields for _, fields in entries), "pending", wanted))
        if len(entries) < _PAGE:
            break
        high = f"({entries[-1][0]}"
    async for member, _ in client.zscan_iter(retry, count=_PAGE):
        if len(found) >= limit:
            break
        found.extend(_matches([orjson.loads(member)], "retrying", wanted))
    async for _, value in client.hscan_iter(dead, count=_PAGE):
        if len(found) >= limit:
            break
        found.extend(_matches([orjson.loads(value)], "dead_lettered", wanted))
    return found[:limit]


def _matches(records: Iterable[dict[str, Any]], state: str, wanted: str) -> list[Stored]:
    return [m for m in (_match(r, state, wanted) for r in records) if m is not None]


def _match(fields: dict[str, Any], state: str, wanted: str) -> Stored | None:
    """The record as `Stored` when its event_id or order_id is `wanted`, else None."""
    text = fields.get("d") or fields.get("r") or ""
    if wanted not in text:
        return None
    if "d" in fields:
        destination = Destination(fields["s"], fields["p"], fields.get("t") or None)
        event = Event.from_tiktok(destination, orjson.loads(fields["d"]))
    else:  # written by a version-1 gateway: one JSON record
        event = Event.from_record(orjson.loads(fields["r"]))
    order = event.properties.get("order_id")
    if event.event_id != wanted and (order is None or str(order) != wanted):
        return None
    dead = state == "dead_lettered"
    return Stored(
        state,
        event,
        int(fields.get("a") or 0),
        float(fields["dead_at"] if dead else fields.get("c") or 0),
        str(fields.get("reason") if dead else fields.get("err") or ""),
        int(fields["code"]) if dead and fields.get("code") else None,
        fields.get("rid") or None,
    )
