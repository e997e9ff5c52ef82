"""Live events for the console, as Server-Sent Events, at no cost while nobody watches.

Only while at least one console page is streaming does `RecentEvents` keep each accepted
event and call our listeners; the first watcher turns both on and the last one turns them
off, so the beacon path costs exactly what it did without a console the rest of the time.
A listener only appends the trace to each watcher's bounded queue (a slow page loses rows,
never slows a beacon); the stream task turns traces into JSON off the beacon's path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import orjson

from gateway.delivery.observe import EventTrace, RecentEvents
from gateway.web.console.view import row

_QUEUE = 2000
_BACKLOG = 200
_HEARTBEAT_SECONDS = 15.0


class Watchers:
    def __init__(self, recent: RecentEvents) -> None:
        self._recent = recent
        self._queues: set[asyncio.Queue[EventTrace]] = set()

    @property
    def count(self) -> int:
        return len(self._queues)

    def _tell(self, trace: EventTrace) -> None:
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(trace)

    @contextlib.contextmanager
    def _watching(self) -> Iterator[asyncio.Queue[EventTrace]]:
        queue: asyncio.Queue[EventTrace] = asyncio.Queue(_QUEUE)
        if not self._queues:
            self._recent.keep_events = True
            self._recent.on_accept(self._tell)
            self._recent.on_settle(self._tell)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)
            if not self._queues:
                self._recent.remove(self._tell)
                self._recent.keep_events = False

    async def stream(self) -> AsyncIterator[bytes]:
        """The latest events (oldest first), then each new event or step as it happens."""
        with self._watching() as queue:
            yield b": watching\n\n"  # from here on, nothing accepted is missed
            for trace in reversed(self._recent.latest(_BACKLOG)):
                yield _message(trace)
            while True:
                try:
                    async with asyncio.timeout(_HEARTBEAT_SECONDS):
                        trace = await queue.get()
                except TimeoutError:
                    yield b": still here\n\n"  # finds a page that went away
                    continue
                yield _message(trace)


def _message(trace: EventTrace) -> bytes:
    return b"data: " + orjson.dumps(row(trace)) + b"\n\n"
