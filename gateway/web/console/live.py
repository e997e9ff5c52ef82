"""Live events for the console, as Server-Sent Events, at no cost while nobody watches.

Only while at least one console page is streaming does `RecentEvents` keep each accepted
event and call our listener; the first watcher turns both on and the last one turns them
off, so the beacon path costs exactly what it did without a console the rest of the time.
With Redis the first watcher also has the other replicas share their events
(`replicas.py`), which arrive through the same listener.

While a page watches, the listener only appends the trace to each watcher's bounded deque.
The stream wakes at most every `_TICK` seconds, keeps the latest state of each event and at
most `_PER_TICK` of them, and only then builds their JSON: a flood of beacons costs the
serving loop an append per event, not a serialisation per event and step (a person cannot
read more rows than that anyway; the newest are the ones shown).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Iterator

import orjson

from gateway.delivery.observe import EventTrace, RecentEvents
from gateway.web.console.replicas import ReplicaFeed
from gateway.web.console.view import row

_QUEUE = 2000
_BACKLOG = 200
_TICK = 0.25
_PER_TICK = 100
_HEARTBEAT_SECONDS = 15.0


class _Watch:
    """One page's stream: what happened since it last sent, and a flag that something did."""

    def __init__(self) -> None:
        self.traces: collections.deque[EventTrace] = collections.deque(maxlen=_QUEUE)
        self.ready = asyncio.Event()


class Watchers:
    def __init__(self, recent: RecentEvents, replicas: ReplicaFeed | None = None) -> None:
        """`replicas` (Redis): while a page watches, other replicas' events come in too."""
        self._recent = recent
        self._replicas = replicas
        self._watches: set[_Watch] = set()

    @property
    def count(self) -> int:
        return len(self._watches)

    def _tell(self, trace: EventTrace) -> None:
        for watch in self._watches:
            watch.traces.append(trace)
            watch.ready.set()

    @contextlib.contextmanager
    def _watching(self) -> Iterator[_Watch]:
        watch = _Watch()
        if not self._watches:
            self._recent.keep_for(self)
            self._recent.on_accept(self._tell)
            self._recent.on_settle(self._tell)
            if self._replicas is not None:
                self._replicas.watch()
        self._watches.add(watch)
        try:
            yield watch
        finally:
            self._watches.discard(watch)
            if not self._watches:
                if self._replicas is not None:
                    self._replicas.unwatch()
                self._recent.remove(self._tell)
                self._recent.release(self)

    async def stream(self) -> AsyncIterator[bytes]:
        """The latest events (oldest first), then what changes, a tick at a time."""
        with self._watching() as watch:
            yield b": watching\n\n"  # from here on, nothing accepted is missed
            for trace in reversed(self._recent.latest(_BACKLOG)):
                yield _message(trace)
            while True:
                try:
                    async with asyncio.timeout(_HEARTBEAT_SECONDS):
                        await watch.ready.wait()
                except TimeoutError:
                    yield b": still here\n\n"  # finds a page that went away
                    continue
                await asyncio.sleep(_TICK)  # what follows within a tick goes in one write
                watch.ready.clear()
                latest: dict[tuple[str, str, str], EventTrace] = {}
                for trace in watch.traces:
                    key = (trace.pixel, trace.event, trace.event_id)
                    latest.pop(key, None)  # its newest state, in the order it last changed
                    latest[key] = trace
                watch.traces.clear()
                yield b"".join(_message(t) for t in list(latest.values())[-_PER_TICK:])


def _message(trace: EventTrace) -> bytes:
    return b"data: " + orjson.dumps(row(trace)) + b"\n\n"
