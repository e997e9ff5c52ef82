"""Live events for the console, as Server-Sent Events, at no cost while nobody watches.

`RecentEvents` keeps accepted events only while a page streams (the first watcher turns it
on, the last off; with Redis the other replicas then share theirs, `telemetry/replicas.py`).
Nothing runs per event: each stream wakes every `_TICK` seconds, asks the buffers (accepted,
and dropped or refused: `telemetry/drops.py`) what changed since its cursors and sends at
most the `_PER_TICK` newest of each. Under a flood the buffers keep every n-th event and the
stream says so (`event: sampling`). Why: docs/design/console.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import orjson

from gateway.console.view import drop_row, row
from gateway.telemetry.drops import RecentDrops
from gateway.telemetry.recent import EventTrace, RecentEvents
from gateway.telemetry.replicas import ReplicaFeed

_BACKLOG = 200
_TICK = 0.25
_PER_TICK = 100
_HEARTBEAT_SECONDS = 15.0


class Watchers:
    def __init__(
        self,
        recent: RecentEvents,
        replicas: ReplicaFeed | None = None,
        drops: RecentDrops | None = None,
    ) -> None:
        """`replicas` (Redis): while a page watches, other replicas' events come in too;
        `drops`: this process's dropped and refused events, shown beside them."""
        self._recent = recent
        self._drops = drops or RecentDrops(0)
        self._replicas = replicas
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    @contextlib.contextmanager
    def _watching(self) -> Iterator[None]:
        if not self._count:
            self._recent.keep_for(self)
            if self._replicas is not None:
                self._replicas.watch()
        self._count += 1
        try:
            yield
        finally:
            self._count -= 1
            if not self._count:
                if self._replicas is not None:
                    self._replicas.unwatch()
                self._recent.release(self)

    async def stream(
        self, alive: Callable[[], Awaitable[bool]] | None = None
    ) -> AsyncIterator[bytes]:
        """The latest events (oldest first), then what changes, a tick at a time; it ends
        at the first tick `alive` answers False (the page's session was revoked)."""
        with self._watching():
            yield b": watching\n\n"  # from here on, nothing accepted is missed
            cursor, dropped = self._recent.cursor(), self._drops.cursor()
            backlog = [(d.at, _data(drop_row(d))) for d in self._drops.latest(_BACKLOG)]
            traces = self._recent.latest(_BACKLOG, sampled=True)
            backlog += [(trace.accepted_at, _message(trace)) for trace in traces]
            for _, message in sorted(backlog, key=lambda entry: entry[0]):  # oldest first
                yield message
            quiet, every = 0.0, 1
            while True:
                await asyncio.sleep(_TICK)  # what changes within a tick goes in one write
                if alive is not None and not await alive():
                    yield b"event: ended\ndata: signed out\n\n"
                    return
                cursor, traces = self._recent.changed_since(cursor, _PER_TICK)
                dropped, drops = self._drops.since(dropped, _PER_TICK)
                chunk = b"".join(_message(trace) for trace in traces)
                chunk += b"".join(_data(drop_row(drop)) for drop in drops)
                sampled = max(self._recent.keep_every, self._drops.keep_every)
                if sampled != every:
                    every = sampled
                    chunk += b"event: sampling\ndata: %d\n\n" % every
                if chunk:
                    quiet = 0.0
                    yield chunk
                else:
                    quiet += _TICK
                    if quiet >= _HEARTBEAT_SECONDS:
                        quiet = 0.0
                        yield b": still here\n\n"  # finds a page that went away


def _message(trace: EventTrace) -> bytes:
    return _data(row(trace))


def _data(shown: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(shown) + b"\n\n"
