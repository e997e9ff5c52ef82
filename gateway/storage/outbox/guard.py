"""Load shedding before the store fills: the beacon refuses new events (503) while the
backlog is past a configured size or age, or the room left for it is nearly gone.

The guard reads the backlog once a second (`Outbox.backlog`, which never scans) and keeps one
verdict the beacon reads for free. Browser traffic sheds: it is a flood's vector and the least
valuable per event; server senders retry and carry purchases, so they go on until the store
itself refuses. `/readyz` and `/metrics` say when it sheds, and why.
Why: docs/design/load-shedding.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.core.errors import OutboxUnavailable
from gateway.storage.outbox.base import Backlog, EventQueue

log = logging.getLogger(__name__)
MB = 1024 * 1024


@dataclass(frozen=True)
class BacklogLimits:
    """0 turns a limit off."""

    max_bytes: int
    max_age_seconds: float
    min_free_bytes: int

    def verdict(self, backlog: Backlog) -> str | None:
        """Why new browser events must be refused now, or None when they may come."""
        if self.max_bytes and backlog.stored_bytes > self.max_bytes:
            return (
                f"the outbox holds {backlog.stored_bytes / MB:.0f} MB, "
                f"over max_backlog_mb ({self.max_bytes / MB:.0f})"
            )
        age = backlog.oldest_age_seconds
        if self.max_age_seconds and age is not None and age > self.max_age_seconds:
            return (
                f"the oldest undelivered event is {age / 3600:.1f} h old, "
                f"over max_backlog_age_hours ({self.max_age_seconds / 3600:g})"
            )
        free = backlog.free_bytes
        if self.min_free_bytes and free is not None and free < self.min_free_bytes:
            return (
                f"{free / MB:.0f} MB left for the outbox, "
                f"under min_free_mb ({self.min_free_bytes / MB:.0f})"
            )
        return None


class Shedding(OutboxUnavailable):
    """Browser events refused on purpose while the backlog is past a limit."""

    retry_after_seconds = 60


class BacklogGuard:
    """Reads the backlog every `interval` seconds; `shedding` is the current verdict."""

    def __init__(
        self,
        outbox: EventQueue,
        limits: BacklogLimits,
        *,
        interval: float = 1.0,
        on_shed: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`on_shed` counts each request refused."""
        self._outbox = outbox
        self._on_shed = on_shed
        self._limits = limits
        self._interval = interval
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.shedding: str | None = None
        self.backlog: Backlog | None = None

    def check(self) -> None:
        """Raise `Shedding` while browser events must be refused."""
        if self.shedding is not None:
            self._on_shed()
            raise Shedding(self.shedding)

    async def refresh(self) -> None:
        try:
            self.backlog = await self._outbox.backlog(self._clock())
        except OutboxUnavailable:
            return  # the store refuses writes itself; nothing to add
        verdict = self._limits.verdict(self.backlog)
        if verdict != self.shedding:
            if verdict:
                log.warning("shedding browser events: %s", verdict)
            else:
                log.info("no longer shedding browser events")
        self.shedding = verdict

    async def _watch(self) -> None:
        failing = False
        while not self._stopping:
            try:
                await self.refresh()
                failing = False
            except Exception as exc:  # the watch must outlive any one failed reading
                if not failing:
                    log.warning("cannot read the outbox backlog: %s", type(exc).__name__)
                failing = True
            if self._stopping:
                # a client library may turn the cancellation of a reading into its own
                # error (redis-py: a connection error, then OutboxUnavailable): the flag,
                # not the CancelledError, is what ends the watch
                return
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
