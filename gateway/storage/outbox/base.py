"""The outbox interface: where an event lives from acknowledgement until TikTok has it.

`EventQueue` is the hot path: events are added durably before the sender's 2xx; each claimed
event (a lease: claimable again if its holder dies) ends acknowledged, retried at a time, or
dead-lettered with a reason. `OutboxAdmin` is the operators' face: counts, dead letters,
replay, purge. Only hashed, wire-ready events are stored (destination and `event_time` beside
the `data` element), so delivery never parses one again. Each backend translates its
driver's errors into `OutboxUnavailable` at one boundary.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.core.errors import OutboxUnavailable
from gateway.core.event import Destination, Event

CHECKPOINT_DAYS = 35
"""How long an import's chunk checkpoints are kept: past TikTok's 28-day window, a re-import
of the rows would be refused as too old anyway."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """One claimed event: its outbox id, where it goes, what and when it was (for outcomes
    and the age rule), and its stored JSON."""

    id: str
    destination: Destination
    event: str
    event_id: str
    event_time: int
    data: str
    """The event's `data` element as stored: spliced into the request body unparsed."""
    attempts: int

    def decode(self) -> Event:
        """The event itself (operators and tests; delivery never needs it)."""
        return Event.from_tiktok(self.destination, orjson.loads(self.data))


@dataclass(frozen=True, slots=True)
class ClaimedBatch:
    """Claimed events of one destination, at most one request's worth, held as columns.

    What the dispatcher sends, settles and reports: a request of 1000 events touches each
    event only inside C (`join`, `min`, `max`, `zip`), never as an object of its own.
    `items()` gives the events one by one for the rare paths (too old, refused, isolated).
    """

    destination: Destination
    ids: Sequence[str]
    events: Sequence[str]
    event_ids: Sequence[str]
    event_times: Sequence[int]
    data: Sequence[str]
    attempts: Sequence[int]

    def __len__(self) -> int:
        return len(self.ids)

    def items(self) -> list[Claimed]:
        columns = (self.ids, self.events, self.event_ids, self.event_times, self.data)
        return [
            Claimed(i, self.destination, name, event_id, at, data, tries)
            for (i, name, event_id, at, data), tries in zip(
                zip(*columns, strict=True), self.attempts, strict=True
            )
        ]

    def parted(self, keep: Callable[[Claimed], bool]) -> tuple[ClaimedBatch, ClaimedBatch]:
        """(the events `keep` refuses, the events it keeps)."""
        items = self.items()
        refused = [c for c in items if not keep(c)]
        return self.of(self.destination, refused), self.of(
            self.destination, [c for c in items if keep(c)]
        )

    @classmethod
    def of(cls, destination: Destination, items: Sequence[Claimed]) -> ClaimedBatch:
        """A batch of `items` (all of `destination`)."""
        return cls(
            destination,
            [c.id for c in items],
            [c.event for c in items],
            [c.event_id for c in items],
            [c.event_time for c in items],
            [c.data for c in items],
            [c.attempts for c in items],
        )

    @classmethod
    def group(cls, claimed: Sequence[Claimed], batch_size: int) -> list[ClaimedBatch]:
        """Claimed events as requests: one destination each, at most `batch_size` events."""
        groups: dict[Destination, list[Claimed]] = {}
        for item in claimed:
            groups.setdefault(item.destination, []).append(item)
        return [
            cls.of(destination, items[start : start + batch_size])
            for destination, items in groups.items()
            for start in range(0, len(items), batch_size)
        ]


@dataclass
class PixelCounts:
    pending: int = 0
    retrying: int = 0
    in_flight: int = 0
    dead: int = 0
    oldest_age_seconds: float | None = None


@dataclass
class OutboxCounts:
    """What an operator wants to see: totals, the oldest undelivered event, and per pixel."""

    pending: int = 0
    retrying: int = 0
    in_flight: int = 0
    dead: int = 0
    oldest_age_seconds: float | None = None
    pixels: dict[str, PixelCounts] = field(default_factory=dict)


@dataclass(frozen=True)
class Backlog:
    """What the load-shedding guard watches (`outbox/guard.py`); cheap to read at any size."""

    stored_bytes: int
    """What the store holds now: the database file, or Redis's memory."""
    oldest_age_seconds: float | None
    """Age of the oldest undelivered event; None when there is none."""
    free_bytes: int | None
    """Room left where the store grows (the disk, or Redis's `maxmemory`); None: no bound."""


@dataclass(frozen=True)
class DeadLetter:
    id: str
    event: Event
    code: int | None
    reason: str
    dead_at: float
    attempts: int
    request_id: str | None = None
    """TikTok's id of the answer that refused it (what TikTok support asks for first)."""


@dataclass(frozen=True)
class Stored:
    """An event found in the outbox (`OutboxAdmin.find`) and where it waits."""

    state: str
    """pending, in_flight, retrying or dead_lettered."""
    event: Event
    attempts: int
    at: float
    """When it was stored, or when it died."""
    reason: str = ""
    """The last transient error, or why it was dead-lettered."""
    code: int | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """Events as one backend stores them (`EventQueue.prepare`), ready to pass between
    processes: `payload` is the backend's own form."""

    count: int
    payload: Any


class EventQueue(abc.ABC):
    """The durable queue the gateway adds to and the dispatcher drains."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect / create storage; release leases this owner held before a crash."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Idempotent."""

    @abc.abstractmethod
    async def add(self, events: Sequence[Event], *, checkpoint: str | None = None) -> None:
        """Store events durably; return only once they survive a crash. Raises OutboxUnavailable.

        `checkpoint` (file imports): a key recorded in the same transaction as the events,
        so it is stored if and only if they are; `checkpoint_stored` asks for it later."""

    @staticmethod
    def prepare(events: Sequence[Event]) -> Prepared:
        """`events` serialised as this backend stores them, with no I/O and no state: file
        imports prepare in worker processes, and the importer stores with `add_prepared`.
        Raises EventError for a value that cannot be stored."""
        return Prepared(len(events), list(events))

    async def add_prepared(self, prepared: Prepared, *, checkpoint: str | None = None) -> None:
        """`add` of what `prepare` made (same guarantees)."""
        events: list[Event] = prepared.payload
        await self.add(events, checkpoint=checkpoint)

    async def checkpoint_stored(self, key: str) -> bool:
        """Whether an `add` with this checkpoint was stored (kept CHECKPOINT_DAYS)."""
        raise OutboxUnavailable(f"{type(self).__name__} keeps no import checkpoints")

    @abc.abstractmethod
    async def claim(self, limit: int, now: float) -> list[Claimed]:
        """Lease up to `limit` ready events (new, or retries now due), oldest first."""

    async def claim_batches(self, limit: int, now: float, batch_size: int) -> list[ClaimedBatch]:
        """`claim`, grouped into requests of at most `batch_size` events of one destination
        (what the dispatcher sends); a backend may build the columns without the objects."""
        return ClaimedBatch.group(await self.claim(limit, now), batch_size)

    @abc.abstractmethod
    async def ack(self, ids: Sequence[str]) -> None:
        """Delivered: forget these events."""

    @abc.abstractmethod
    async def retry(self, ids: Sequence[str], due: float, reason: str) -> None:
        """Transient failure: make these events claimable again at `due`."""

    @abc.abstractmethod
    async def dead_letter(
        self,
        ids: Sequence[str],
        reason: str,
        code: int | None,
        now: float,
        *,
        request_id: str | None = None,
    ) -> None:
        """Permanent failure: keep the events aside with TikTok's code and message."""

    @abc.abstractmethod
    async def release_leases(self) -> None:
        """The process that claimed events died (the owner knows it): make them ready now."""

    @abc.abstractmethod
    async def check_writable(self) -> None:
        """Raise OutboxUnavailable when a write would fail now (for /readyz)."""

    @abc.abstractmethod
    async def backlog(self, now: float) -> Backlog:
        """How big and how old the backlog is, without scanning it."""


class OutboxAdmin(abc.ABC):
    """What operators do with the store: look, replay, purge. Never on the hot path."""

    @abc.abstractmethod
    async def counts(self, now: float) -> OutboxCounts: ...

    @abc.abstractmethod
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]: ...

    @abc.abstractmethod
    async def find(self, wanted: str, limit: int = 50) -> list[Stored]:
        """Events waiting or dead-lettered whose event_id or order_id is `wanted`, newest
        first: read a page at a time, so a long backlog never holds the store for long."""

    @abc.abstractmethod
    async def replay(
        self, pixel: str | None = None, code: int | None = None, *, dry_run: bool = False
    ) -> int:
        """Move matching dead letters back to pending; returns how many (`dry_run`: how
        many would move, nothing moved)."""

    @abc.abstractmethod
    async def purge_dead(self, older_than: float, *, dry_run: bool = False) -> int:
        """Delete dead letters that died before `older_than` (a Unix time); returns how
        many (`dry_run`: how many would go, nothing deleted)."""


class Outbox(EventQueue, OutboxAdmin):
    """Both faces of one store. Implementations: `SqliteOutbox`, `RedisOutbox`."""
