"""Events per minute over the last hour, per pixel: what the console's chart draws.

Each pixel has a ring of 60 counts indexed by the minute modulo 60: counting is a dict lookup
and an increment. With Redis each replica writes, every few seconds, the counts of the minutes
that changed into one hash per minute, in its own field and as absolute counts (a retried
flush never counts twice); a reader sums the other replicas' fields and adds its own exact
counts. Layout, expiry and rolling upgrades: docs/design/per-minute.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from gateway.core.event import Event
from gateway.ingest.policy import SourcePolicy

log = logging.getLogger(__name__)
MINUTES = 60
_KEEP_SECONDS = (MINUTES + 5) * 60


class _Ring:
    """One pixel's hour: counts, the minute each slot holds, and the count last written."""

    __slots__ = ("counts", "flushed", "minutes")

    def __init__(self) -> None:
        self.counts = [0] * MINUTES
        self.minutes = [-1] * MINUTES
        self.flushed = [0] * MINUTES

    def count(self, minute: int) -> int:
        slot = minute % MINUTES
        return self.counts[slot] if self.minutes[slot] == minute else 0


class EventsPerMinute:
    def __init__(
        self,
        pixels: Iterable[str],
        *,
        clock: Callable[[], float] = time.time,
        redis: Any = None,
        prefix: str = "tiktok-gateway",
        flush_seconds: float = 5.0,
        replica: str | None = None,
    ) -> None:
        """`redis`: share the counts with the other replicas through this client (the
        storage backend's `shared_counters()`, which it closes), as `replica` (by default a
        name of its own: host, process and a random part)."""
        self._rings = {pixel: _Ring() for pixel in pixels}
        self._every_ring = dict(self._rings)
        """Rings of pixels a reload removed too: one put back keeps its hour (its field in
        Redis holds the count so far, which a new ring would overwrite from 0)."""
        self._replica = replica or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._clock = clock
        self._redis = redis
        self._prefix = f"{prefix}:per-minute:"
        self._flush_seconds = flush_seconds
        self._task: asyncio.Task[None] | None = None
        self._failing: set[str] = set()
        """What fails now ("read", "shared"), each logged once per outage."""

    def track(self, pixels: Iterable[str]) -> None:
        """The pixels of a reloaded configuration: new ones get a ring, kept ones keep theirs
        (one reference swapped: a count in flight lands in the old table or the new)."""
        self._every_ring.update((p, _Ring()) for p in pixels if p not in self._every_ring)
        self._rings = {pixel: self._every_ring[pixel] for pixel in pixels}

    @property
    def shared(self) -> bool:
        return self._redis is not None

    def accepted(self, events: Sequence[Event], policy: SourcePolicy) -> None:
        """An accept hook: one increment per stored event."""
        minute = int(self._clock() // 60)
        slot = minute % MINUTES
        rings = self._rings
        for event in events:
            ring = rings.get(event.destination.event_source_id)
            if ring is None:
                continue
            if ring.minutes[slot] != minute:  # a new minute: the slot's old one left the hour
                ring.minutes[slot] = minute
                ring.counts[slot] = 0
                ring.flushed[slot] = 0
            ring.counts[slot] += 1

    def _hour(self) -> range:
        now = int(self._clock() // 60)
        return range(now - MINUTES + 1, now + 1)

    def local(self) -> dict[str, list[int]]:
        """This process's counts, per pixel, oldest minute first (the last is this minute)."""
        hour = self._hour()
        return {pixel: [ring.count(m) for m in hour] for pixel, ring in self._rings.items()}

    async def per_minute(self) -> dict[str, list[int]]:
        """Every replica's counts with Redis (falling back to this one's if it is down)."""
        if self._redis is None:
            return self.local()
        hour = self._hour()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for minute in hour:
                    pipe.hgetall(f"{self._prefix}{minute}")
                stored: list[dict[bytes, bytes]] = await pipe.execute()
        except Exception as exc:  # an operator's chart: show what this replica knows
            self._trouble("read from Redis", exc)
            return self.local()
        self._failing.discard("read from Redis")
        others: dict[bytes, list[int]] = {pixel.encode(): [0] * MINUTES for pixel in self._rings}
        for index, counts in enumerate(stored):
            for field, value in counts.items():
                pixel, _, replica = field.partition(b" ")
                if pixel in others and replica != self._replica.encode():
                    others[pixel][index] += int(value)
        return {
            pixel: [
                ring.count(minute) + other
                for minute, other in zip(hour, others[pixel.encode()], strict=True)
            ]
            for pixel, ring in self._rings.items()
        }

    async def flush(self) -> None:
        """Write the counts of the minutes that changed since the last flush that got through."""
        if self._redis is None:
            return
        written: list[tuple[_Ring, str, int, int]] = []
        for pixel, ring in self._rings.items():
            for minute in self._hour():
                slot = minute % MINUTES
                if ring.minutes[slot] == minute and ring.counts[slot] != ring.flushed[slot]:
                    written.append((ring, pixel, minute, ring.counts[slot]))
        if not written:
            return
        now = self._clock()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for _, pixel, minute, count in written:
                    key = f"{self._prefix}{minute}"
                    pipe.hset(key, f"{pixel} {self._replica}", count)
                    # the clock's, not Redis's: tests move it
                    pipe.expire(key, max(1, int(minute * 60 + _KEEP_SECONDS - now)))
                await pipe.execute()
        except Exception as exc:  # written again, whole, at the next flush
            self._trouble("shared", exc)
            return
        self._failing.discard("shared")
        for ring, _, minute, count in written:
            if ring.minutes[minute % MINUTES] == minute:
                ring.flushed[minute % MINUTES] = count

    def _trouble(self, what: str, exc: Exception) -> None:
        """Once per outage, not at every flush and every chart refresh."""
        if what not in self._failing:
            self._failing.add(what)
            log.warning("events per minute not %s: %s", what, type(exc).__name__)

    def start(self) -> None:
        if self._redis is not None and self._task is None:
            self._task = asyncio.create_task(self._run(), name="events-per-minute")

    async def _run(self) -> None:
        # ends on the flag, not only on the cancel: redis-py can turn the cancel of a flush
        # in flight into a connection error, which the flush counts as an outage
        while self._task is not None:
            await asyncio.sleep(self._flush_seconds)
            await self.flush()

    async def stop(self) -> None:
        """Flush what is left (the client is the backend's to close). Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.flush()
