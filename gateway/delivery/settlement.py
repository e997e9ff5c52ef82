"""Each settled batch as one `Settlement`, reported to an observer.

The dispatcher reports every batch's fate (delivered, retry scheduled, dead-lettered, with
TikTok's code, message and request id) to a `DeliveryObserver`. In the serving process that
is the recent-events buffer itself; in the delivery process it is a `SettlementChannel` that
hands settlements to the parent over a pipe, where `read_settlements` reads them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

import orjson

from gateway.delivery.options import DeliveryStats

DELIVERED, RETRY, DEAD_LETTERED = "delivered", "retry", "dead_lettered"
_FLUSH_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Settlement:
    """One batch's fate; `events` are (event name, event_id) pairs of one pixel."""

    outcome: str
    pixel: str
    events: Sequence[Sequence[str]]
    """(event name, event_id) pairs, as decoded: no conversion on the serving loop."""
    at: float
    request: int | None = None
    """The dispatcher's number for the request that carried the batch (None: not sent)."""
    code: int | None = None
    message: str = ""
    request_id: str | None = None
    retry_at: float | None = None

    def to_json(self) -> list[Any]:
        """Compact and positional: a batch's settlement crosses the pipe many times a second."""
        return [
            self.outcome,
            self.pixel,
            self.events,
            self.at,
            self.request,
            self.code,
            self.message,
            self.request_id,
            self.retry_at,
        ]

    @classmethod
    def from_json(cls, fields: list[Any]) -> Settlement:
        return cls(*fields)


class DeliveryObserver(Protocol):
    def settled(self, settlement: Settlement) -> None: ...


class NoObserver:
    def settled(self, settlement: Settlement) -> None:
        pass


class SettlementChannel:
    """The delivery process's observer: settlements go to the parent over a pipe.

    Sending never blocks the dispatcher: settlements queue here, and a task writes all that
    waits from a thread. The queue is bounded in bytes: if the parent falls
    behind, the oldest are dropped (and counted) — they are observations; the events
    themselves are settled in the outbox already.
    """

    def __init__(self, connection: Connection, *, max_bytes: int = 8 * 1024 * 1024) -> None:
        self._connection = connection
        self._queue: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._writer: asyncio.Task[None] | None = None
        self._stats = DeliveryStats()

    def count_into(self, stats: DeliveryStats) -> None:
        """Count dropped settlements in the dispatcher's counters (they reach /metrics)."""
        self._stats = stats

    def settled(self, settlement: Settlement) -> None:
        # copied to its own size: orjson's output of a large batch keeps the capacity it
        # grew to (measured: 254 KiB held for 27 KB of JSON), which a queue would multiply
        payload = memoryview(orjson.dumps(settlement.to_json())).tobytes()
        self._queue.append(payload)
        self._bytes += len(payload)
        while self._bytes > self._max_bytes and len(self._queue) > 1:
            self._bytes -= len(self._queue.popleft())
            self._stats.outcomes_dropped += 1
        self._drained.clear()
        self._ready.set()

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write(), name="settlement-channel")

    async def _write(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                waiting = list(self._queue)
                self._queue.clear()
                self._bytes = 0
                try:
                    await asyncio.to_thread(self._send_each, waiting)
                except OSError:  # the parent is gone; the process is about to end
                    return
            self._drained.set()

    def _send_each(self, payloads: list[bytes]) -> None:
        """One message per settlement: joining them would make multi-megabyte buffers, and
        freeing those raises glibc's mmap threshold until the heap fragments (measured: the
        delivery process grew ~5 MB/s under load that way)."""
        for payload in payloads:
            self._connection.send_bytes(payload)

    async def close(self) -> None:
        """Send what is queued (a graceful stop, for at most a few seconds), close the pipe."""
        if self._writer is not None:
            self._ready.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_FLUSH_SECONDS):
                    await self._drained.wait()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self._connection.close()


def read_settlements(connection: Connection, observer: DeliveryObserver) -> bool:
    """Read every settlement waiting on `connection` into `observer`; False when it closed.

    The end is made blocking first: the event loop's `add_reader` leaves it non-blocking,
    and a settlement larger than what the child has written so far then failed its read
    mid-message (`BlockingIOError`), which was taken for a closed pipe: the gateway stopped
    listening for good, and the child's queue filled to its bound (8 MB of memory).
    """
    try:
        os.set_blocking(connection.fileno(), True)
        while connection.poll():
            observer.settled(Settlement.from_json(orjson.loads(connection.recv_bytes())))
    except (EOFError, OSError):
        return False
    return True
