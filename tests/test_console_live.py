"""The live stream costs the beacon path nothing while no console page watches, and no
more than a counter while one does."""

from __future__ import annotations

import asyncio

import orjson

from gateway.console.live import Watchers
from gateway.ingest.policy import SERVER
from gateway.telemetry.recent import RecentEvents
from tests.conftest import make_event


def test_events_are_kept_only_while_a_page_watches() -> None:
    async def scenario() -> None:
        recent = RecentEvents(10)
        watchers = Watchers(recent)
        recent.accepted([make_event(1)], SERVER)
        assert not recent.keep_events

        stream = watchers.stream()
        assert await anext(stream) == b": watching\n\n"
        assert recent.keep_events
        backlog = await anext(stream)  # accepted before: shown, without its keys
        assert b'"event_id":"ev-CTESTPIXEL0001-1"' in backlog and b'"keys"' not in backlog

        recent.accepted([make_event(2)], SERVER)
        live = await anext(stream)
        assert b'"event_id":"ev-CTESTPIXEL0001-2"' in live and b'"score":2' in live

        await stream.aclose()
        assert not recent.keep_events and watchers.count == 0

    asyncio.run(scenario())


def test_a_flood_is_sent_a_tick_at_a_time_newest_first_kept() -> None:
    """300 events and a settlement of the newest: one write of the newest 100, in their last
    state."""

    async def scenario() -> None:
        from gateway.console import live
        from gateway.delivery.settlement import DELIVERED, Settlement

        recent = RecentEvents(1000)
        recent.accepted([make_event(1000)], SERVER)
        stream = Watchers(recent).stream()
        assert await anext(stream) == b": watching\n\n"
        assert b"ev-CTESTPIXEL0001-1000" in await anext(stream)  # the backlog
        events = [make_event(n) for n in range(300)]
        recent.accepted(events, SERVER)
        last = events[-1]
        recent.settled(
            Settlement(
                DELIVERED, last.destination.event_source_id, [["Purchase", last.event_id]], 1.0
            )
        )
        chunk = await anext(stream)
        rows = [orjson.loads(line[6:]) for line in chunk.split(b"\n\n") if line]
        assert len(rows) == live._PER_TICK
        assert rows[-1]["event_id"] == last.event_id and rows[-1]["state"] == "delivered"
        assert rows[0]["event_id"] == events[200].event_id
        await stream.aclose()

    asyncio.run(scenario())


def test_the_page_is_told_when_it_is_shown_a_sample() -> None:
    async def scenario() -> None:
        now = [1000.0]
        recent = RecentEvents(1000, clock=lambda: now[0], keep_per_second=40)
        recent.accepted([make_event(999)], SERVER)
        stream = Watchers(recent).stream()
        assert await anext(stream) == b": watching\n\n"
        assert b"ev-CTESTPIXEL0001-999" in await anext(stream)  # the backlog
        for n in range(0, 400, 10):  # 400 events in half a second: 800 a second
            recent.accepted([make_event(n + i) for i in range(10)], SERVER)
            now[0] += 0.0125
        chunk = await anext(stream)
        assert chunk.endswith(b"event: sampling\ndata: 20\n\n")
        rows = [orjson.loads(line[6:]) for line in chunk.split(b"\n\n") if b'"event_id"' in line]
        assert len(rows) == 100 and all("keys" in row for row in rows)  # all of them kept ones

        now[0] += 1.0  # the flood is over: nothing for a second
        assert await anext(stream) == b"event: sampling\ndata: 1\n\n"
        await stream.aclose()

    asyncio.run(scenario())
