"""The live stream costs the beacon path nothing while no console page watches."""

from __future__ import annotations

import asyncio

from gateway.delivery.observe import RecentEvents
from gateway.ingest.policy import SERVER
from gateway.web.console.live import Watchers
from tests.conftest import make_event


def test_events_are_kept_and_listened_to_only_while_a_page_watches() -> None:
    async def scenario() -> None:
        recent = RecentEvents(10)
        watchers = Watchers(recent)
        recent.accepted([make_event(1)], SERVER)
        assert not recent.keep_events and not recent.listened

        stream = watchers.stream()
        assert await anext(stream) == b": watching\n\n"
        assert recent.keep_events and recent.listened
        backlog = await anext(stream)  # accepted before: shown, without its keys
        assert b'"event_id":"ev-CTESTPIXEL0001-1"' in backlog and b'"keys"' not in backlog

        recent.accepted([make_event(2)], SERVER)
        live = await anext(stream)
        assert b'"event_id":"ev-CTESTPIXEL0001-2"' in live and b'"score":2' in live

        await stream.aclose()
        assert not recent.keep_events and not recent.listened and watchers.count == 0

    asyncio.run(scenario())
