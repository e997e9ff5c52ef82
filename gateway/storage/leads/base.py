"""The lead-context store: what the browser showed for a lead, kept for its backend events.

A browser event with an identity key (`external_id`, `order_id`, or a configured property)
leaves what the gateway observed (`ttclid` and when first seen, `_ttp`, IP, user agent, page
URL, locale) under an HMAC of the key's SHA-256, for the attribution window and bounded in
number; a later backend event with the same key gets what it lacks (`Observed` only
completes). Browser writes are queued and batched by one task, and a lookup writes the queue
first. Why: docs/design/lead-context.md.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from gateway.core.normalize import hash_external_id

log = logging.getLogger(__name__)
_STOP_SECONDS = 10.0
CONTEXT_FIELDS = ("ttclid", "ttclid_at", "ttp", "ip", "user_agent", "url", "locale", "visitor")


@dataclass(frozen=True, slots=True)
class LeadContext:
    """What the browser path observed for one lead; any part may be unknown."""

    ttclid: str | None = None
    ttclid_at: float | None = None
    """When the click happened (its attribution window starts there): the time the source
    knew, else when the gateway first saw the click id. Entries written before that stored
    when the lead was first stored with the click, which is never earlier: still read."""
    ttp: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    url: str | None = None
    locale: str | None = None
    visitor: str | None = None
    """Who wrote the entry: a keyed hash of the visitor id in the browser's signed cookie.
    None in entries written before entries had owners (anyone's write completes them)."""

    def merged(self, newer: LeadContext) -> LeadContext:
        """`newer` over this one: a later page without a click id keeps the earlier click."""
        known = {k: v for k, v in asdict(newer).items() if v is not None}
        if newer.ttclid is not None and newer.ttclid == self.ttclid:
            known["ttclid_at"] = _earliest(self.ttclid_at, newer.ttclid_at)  # the same click
        return replace(self, **known)

    def written_over_by(self, newer: LeadContext) -> LeadContext | None:
        """What a write of `newer` leaves stored, or None when it is refused: an entry belongs
        to the visitor who wrote it first, so another visitor's claim of the same lead id
        cannot rewrite its attribution (the first writer wins until the entry expires)."""
        if self.visitor is not None and newer.visitor != self.visitor:
            return None
        return self.merged(newer)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: Any) -> LeadContext:
        if not isinstance(data, dict):
            return cls()
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _earliest(stored: float | None, given: float | None) -> float | None:
    return given if stored is None else stored if given is None else min(stored, given)


class KeyHasher:
    """Identity keys as stored: HMAC of the value's SHA-256 (or of a SHA-256 it already is)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def of_digest(self, digest: str) -> str:
        return hmac.new(self._secret, digest.lower().encode(), hashlib.sha256).hexdigest()

    def of_value(self, value: str) -> str | None:
        digest = hash_external_id(value)
        return self.of_digest(digest) if digest else None

    def of_visitor(self, visitor_id: str) -> str:
        """An entry's owner as stored: the visitor id (from the signed cookie), keyed."""
        return hmac.new(self._secret, f"visitor:{visitor_id}".encode(), hashlib.sha256).hexdigest()[
            :32
        ]


@dataclass
class ContextStats:
    hits: int = 0
    misses: int = 0
    entries: int = 0
    written: int = 0
    refused: int = 0
    """Writes refused because another visitor's entry holds the key."""
    evicted: int = 0
    """Unexpired entries dropped by the sweep to stay within `max_entries`."""
    browser_keys: dict[str, int] = field(default_factory=dict)
    """Identity keys browsers sent, by what became of them ("remembered", "beyond_bound",
    "rate_limited"; counted by `ingest/leads.py`, which applies those bounds)."""


class ContextStore(abc.ABC):
    """One backend's table or keys; `remember` queues, `lookup` reads (after a flush)."""

    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_entries: int,
        sweep_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.stats = ContextStats()
        self.clock = clock
        self._sweep_seconds = sweep_seconds
        self._queued: dict[str, LeadContext] = {}
        self._joined: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flushing: asyncio.Lock | None = None
        self._next_sweep = 0.0
        self._stopping = False

    # --- backend ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def _prepare(self) -> None:
        """Create the table / load scripts."""

    @abc.abstractmethod
    async def _write(self, entries: dict[str, LeadContext], now: float) -> int:
        """Write each entry over what is stored under its key (`written_over_by`) and
        (re)start its expiry; return how many were refused (another visitor's key)."""

    @abc.abstractmethod
    async def _mark_joined(self, keys: Sequence[str]) -> None:
        """Mark entries a backend event found: the sweep evicts them last."""

    @abc.abstractmethod
    async def _read(self, keys: Sequence[str], now: float) -> dict[str, LeadContext]:
        """The unexpired context of each of `keys` that has one, in one round trip."""

    @abc.abstractmethod
    async def _sweep(self, now: float) -> tuple[int, int]:
        """Drop expired entries, then past `max_entries` those never joined by a backend event
        (soonest to expire first), then joined ones; return (remaining, evicted)."""

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        await self._prepare()
        self._flushing = asyncio.Lock()
        self._task = asyncio.create_task(self._run(), name="lead-context")

    async def close(self) -> None:
        """Write what is queued, stop the task. Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        # asked to stop, not cancelled: a Redis command cancelled halfway can hang the close
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(task, _STOP_SECONDS)
        except TimeoutError:
            log.warning("lead context: the writer did not stop in time")
        with contextlib.suppress(Exception):
            await self.flush()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._sweep_seconds)
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self.flush()
                if self.clock() >= self._next_sweep:
                    await self.sweep()
            except Exception as exc:  # the store is an aid: a failure must not stop the task
                log.warning("lead context: %s", type(exc).__name__)

    # --- use -------------------------------------------------------------------------------

    def remember(self, entries: Iterable[tuple[str, LeadContext]]) -> None:
        """Queue contexts to store (never blocks; the task writes them)."""
        queued = self._queued
        for key, context in entries:
            earlier = queued.get(key)
            if earlier is None:
                queued[key] = context
            elif (written := earlier.written_over_by(context)) is not None:
                queued[key] = written
            else:
                self.stats.refused += 1
        if queued:
            self._wake.set()

    async def flush(self) -> None:
        """Write what is queued; also waits for a write already under way."""
        if self._flushing is None:
            return
        async with self._flushing:
            batch, self._queued = self._queued, {}
            if batch:
                refused = await self._write(batch, self.clock())
                self.stats.written += len(batch) - refused
                self.stats.refused += refused
            joined, self._joined = self._joined, set()
            if joined:
                await self._mark_joined(sorted(joined))

    async def lookup(self, keys: Sequence[str]) -> LeadContext | None:
        """The context remembered for any of `keys` (first key first); counts hits/misses."""
        return (await self.lookup_each([keys]))[0] if keys else None

    async def lookup_each(self, key_lists: Sequence[Sequence[str]]) -> list[LeadContext | None]:
        """`lookup` for many events (a chunk of an import, a batch) in ONE read of the store:
        a round trip per event would cost a file import more than its parsing."""
        wanted = list(dict.fromkeys(key for keys in key_lists for key in keys))
        if not wanted:
            return [None] * len(key_lists)
        await self.flush()  # what the browser path queued, or is writing now, counts
        stored = await self._read(wanted, self.clock())
        if stored:
            self._joined.update(stored)  # marked at the next flush: evicted last
            self._wake.set()
        found: list[LeadContext | None] = []
        for keys in key_lists:
            context = _combined(stored, keys)
            if keys:
                if context is None:
                    self.stats.misses += 1
                else:
                    self.stats.hits += 1
            found.append(context)
        return found

    async def sweep(self) -> None:
        now = self.clock()
        self.stats.entries, evicted = await self._sweep(now)
        self.stats.evicted += evicted
        self._next_sweep = now + self._sweep_seconds


def _combined(stored: dict[str, LeadContext], keys: Sequence[str]) -> LeadContext | None:
    """What an event's keys hold together: the first key's values win, later keys complete
    them, but only from entries of the same visitor — an entry another visitor wrote under
    a second key (an order id claimed ahead) must not fill in a click the first lacks."""
    found = [entry for key in keys if (entry := stored.get(key)) is not None]
    if not found:
        return None
    owner = next((entry.visitor for entry in found if entry.visitor is not None), None)
    context: LeadContext | None = None
    for entry in reversed(found):
        if entry.visitor is not None and entry.visitor != owner:
            continue
        context = entry if context is None else context.merged(entry)
    return context
