"""The latest events and what became of each: the buffer the console reads.

`RecentEvents` keeps a bounded buffer of the latest events — accepted (the pipeline's accept
hook) and then each step of their delivery (`Settlement`s). Readers poll it a tick at a time
with a `Cursor`, as a log reader keeps its offset: nothing is called per event, so an open
console page costs the beacon a counter. Events are hashed before they get here.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from gateway.core.event import Event
from gateway.delivery.settlement import Settlement
from gateway.ingest.policy import SourcePolicy

log = logging.getLogger(__name__)
_KEEP_WINDOW_SECONDS = 0.25
_SCAN_PER_ROW = 20
"""A tick reads at most this many settled events per row it may show."""
_NAMED_PER_EVENT = 10
"""The settlements kept name at most this many events per event the buffer holds (and at
most one settlement per ten events): at 1000 events a batch the count alone kept 100,000
(event, event_id) pairs, ~19 MB, for a buffer of 1000 events."""


@dataclass(slots=True)
class EventTrace:
    """One event as the console shows it: what was accepted and each delivery step since.
    Events other replicas accepted are traced too while the console shares them
    (`telemetry/replicas.py`)."""

    pixel: str
    event: str
    event_id: str
    source: str
    accepted_at: float
    accepted: Event | None
    """The event as stored, hashed, when the buffer keeps events (the console asks it to);
    rendered with `to_tiktok()` when shown."""
    steps: list[Settlement] = field(default_factory=list)
    """Each settlement of a batch that carried this event, oldest first."""
    replica: str = ""
    """The replica that accepted it, when another one did ("": this process)."""

    @property
    def state(self) -> str:
        return self.steps[-1].outcome if self.steps else "accepted"


Tap = Callable[[Settlement], None]
Key = tuple[str, str, str]
"""(pixel, event name, event_id): what TikTok deduplicates on."""


class _Unkept:
    """In place of an event a flood's sampling left out. Not None: None stands for an event
    accepted while nobody kept any (before a page opened), whose later steps are shown."""


UNKEPT = _Unkept()
Kept = Event | _Unkept | None


@dataclass(frozen=True, slots=True)
class Cursor:
    """How far a reader of `RecentEvents` got: the accepts and settlements it has seen."""

    accepted: int = 0
    settled: int = 0


class RecentEvents:
    """A bounded buffer of the latest events and their outcomes, read by cursor."""

    def __init__(
        self,
        capacity: int = 1000,
        *,
        clock: Callable[[], float] = time.time,
        keep_events: bool = False,
        keep_per_second: float = 400.0,
    ) -> None:
        """`keep_events`: keep accepted Events, not only their key, source and time. Off by
        default (the console turns it on): each retained event's dicts stay in the garbage
        collector's sight and out of the CPU's caches. Measured under a flood of beacons,
        keeping all of them cost ~6 µs of ~150 per beacon; so at most about
        `keep_per_second` of this process's events are kept, evenly (every n-th), n adapted
        every quarter second to the rate of the quarter that ended. 400 a second is what a
        console page shows at most (100 rows a tick). Other replicas' events come sampled
        by their own replica (`replicas.py`) and are all kept."""
        self.keep_events = keep_events
        self._keep_per_second = keep_per_second
        self._keep_every = 1
        self._countdown = 0
        self._window_at = self._last_at = clock()
        self._window_count = 0
        self._elsewhere_count = 0
        """Accepts by other replicas: counted for cursors, not for this process's rate."""
        self._capacity = capacity
        self._clock = clock
        # kept as plain tuples and lists: recording runs on every beacon, and a trace object
        # per event cost ~2.5 µs of it; EventTrace is built when somebody reads
        # (accepted at, source, the event kept, replica, its accept's sequence number)
        self._accepted: collections.OrderedDict[Key, tuple[float, str, Kept, str, int]] = (
            collections.OrderedDict()
        )
        self._steps: dict[Key, list[Settlement]] = {}
        # a settlement names up to 1000 events: keep fewer of them than of events
        self._settlements = _Settlements(max(1, capacity // 10), _NAMED_PER_EVENT * capacity)
        self._unindexed = _Settlements(max(1, capacity // 10), _NAMED_PER_EVENT * capacity)
        self._accepted_count = 0
        self._settled_count = 0
        self._taps: list[Tap] = []
        self._keepers: set[object] = set()
        self._orphans: collections.OrderedDict[Key, list[Settlement]] | None = None
        """Steps of events not (yet) in the buffer, kept while other replicas' events may
        arrive after their settlement: another replica's dispatcher can be the faster."""

    def tap(self, tap: Tap) -> None:
        """Call `tap` with each settlement of this process's delivery (not another
        replica's): what the console shares with the other replicas."""
        self._taps.append(tap)

    def untap(self, tap: Tap) -> None:
        while tap in self._taps:
            self._taps.remove(tap)

    def keep_for(self, owner: object) -> None:
        """Keep each accepted Event while at least one owner asks (`release` ends it)."""
        if not self._keepers:  # kept from now on, all of them until the rate is known
            self._keep_every, self._countdown = 1, 0
            self._window_at = self._last_at = self._clock()
            self._window_count = self._accepted_count - self._elsewhere_count
        self._keepers.add(owner)
        self.keep_events = True

    def release(self, owner: object) -> None:
        self._keepers.discard(owner)
        self.keep_events = bool(self._keepers)

    def expect_other_replicas(self, expected: bool) -> None:
        """While true, steps of events not in the buffer wait (bounded) for their event."""
        self._orphans = collections.OrderedDict() if expected else None

    @property
    def keep_every(self) -> int:
        """While events are kept: 1, or n when only every n-th is (a flood, until a quarter
        second passes with no event)."""
        if self._clock() - self._last_at >= _KEEP_WINDOW_SECONDS:
            return 1
        return self._keep_every

    def accepted(self, events: Sequence[Event], policy: SourcePolicy) -> None:
        """The pipeline stored `events` (an accept hook)."""
        now, source, accepted = self._clock(), policy.name, self._accepted
        if self.keep_events:
            self._keep_some(events, now, source)
        else:
            sequence = self._accepted_count
            for event in events:
                key = (event.destination.event_source_id, event.event, event.event_id)
                accepted.pop(key, None)  # the same event again: it moves to the end
                sequence += 1
                accepted[key] = (now, source, None, "", sequence)
            self._accepted_count = sequence
        while len(accepted) > self._capacity:
            self._steps.pop(accepted.popitem(last=False)[0], None)

    def _keep_some(self, events: Sequence[Event], now: float, source: str) -> None:
        """Record `events`, keeping every `_keep_every`-th; once a window has passed, adapt
        n to this process's rate over it (a burst then a pause averages out: bursty
        traffic is sampled, and a flood that ended stops being one)."""
        window = now - self._window_at
        if window >= _KEEP_WINDOW_SECONDS:
            here = self._accepted_count - self._elsewhere_count
            rate = (here - self._window_count) / window
            self._keep_every = max(1, math.ceil(rate / self._keep_per_second))
            self._countdown = min(self._countdown, self._keep_every)  # n fell: no long wait
            self._window_at, self._window_count = now, here
        self._last_at = now
        accepted, every, countdown = self._accepted, self._keep_every, self._countdown
        sequence = self._accepted_count
        for event in events:
            key = (event.destination.event_source_id, event.event, event.event_id)
            accepted.pop(key, None)
            sequence += 1
            countdown -= 1
            if countdown <= 0:
                accepted[key] = (now, source, event, "", sequence)
                countdown = every
            else:
                accepted[key] = (now, source, UNKEPT, "", sequence)
        self._countdown = countdown
        self._accepted_count = sequence

    def accepted_elsewhere(
        self, replica: str, key: Key, at: float, source: str, event: Event | None
    ) -> None:
        """Another replica stored an event (the console shares it while a page watches)."""
        self._accepted_count += 1
        self._elsewhere_count += 1
        self._accepted.pop(key, None)
        self._accepted[key] = (at, source, event, replica, self._accepted_count)
        early = self._orphans.pop(key, None) if self._orphans is not None else None
        if early:
            self._steps.setdefault(key, []).extend(early)
        while len(self._accepted) > self._capacity:
            self._steps.pop(self._accepted.popitem(last=False)[0], None)

    def settled(self, settlement: Settlement) -> None:
        """The dispatcher settled a batch (here, or reported from the delivery process).

        Kept in a bounded list and added to its events' traces only when somebody reads: a
        batch of 1000 costs the serving loop an append, not 1000 lookups.
        """
        self.settled_elsewhere(settlement)
        for tap in self._taps:
            try:
                tap(settlement)
            except Exception:
                log.exception("a settlement tap failed")

    def settled_elsewhere(self, settlement: Settlement) -> None:
        """A batch settled by another replica's delivery (or, from `settled`, by ours)."""
        self._settlements.append(settlement)
        self._unindexed.append(settlement, trim=not self.keep_events)
        self._settled_count += 1
        if self.keep_events and self._unindexed.full:
            self._index()  # somebody reads: no step of theirs may fall off the end unseen

    def _index(self) -> None:
        """Add the settlements not yet seen to the steps of their events still buffered."""
        accepted, steps = self._accepted, self._steps
        while self._unindexed:
            settlement = self._unindexed.popleft()
            pixel = settlement.pixel
            for name, event_id in settlement.events:
                key = (pixel, name, event_id)
                if key in accepted:
                    steps.setdefault(key, []).append(settlement)
                elif self._orphans is not None:
                    self._orphans.setdefault(key, []).append(settlement)
                    if len(self._orphans) > self._capacity:
                        self._orphans.popitem(last=False)

    def settlements(self) -> list[Settlement]:
        """The latest settlements, newest first (each names all the events of its batch)."""
        return list(reversed(self._settlements))

    def latest(self, limit: int | None = None, *, sampled: bool = False) -> list[EventTrace]:
        """Newest first (`sampled`: none a flood's sampling left out)."""
        self._index()
        accepted = self._accepted
        keys = (k for k in reversed(accepted) if not (sampled and accepted[k][2] is UNKEPT))
        return [self._trace(key) for key in itertools.islice(keys, limit)]

    def find(self, pixel: str, event: str, event_id: str) -> EventTrace | None:
        self._index()
        key = (pixel, event, event_id)
        return self._trace(key) if key in self._accepted else None

    def search(self, wanted: str) -> list[EventTrace]:
        """Events still buffered whose event_id, or kept event's order_id, is `wanted`."""
        self._index()
        found = []
        for key, (_, _, kept, _, _) in reversed(self._accepted.items()):
            order = kept.properties.get("order_id") if isinstance(kept, Event) else None
            if key[2] == wanted or (order is not None and str(order) == wanted):
                found.append(self._trace(key))
        return found

    def cursor(self) -> Cursor:
        """Now: what `changed_since` and `accepted_since` count from."""
        return Cursor(self._accepted_count, self._settled_count)

    def accepted_since(
        self, cursor: Cursor, limit: int, *, here_only: bool = False
    ) -> tuple[Cursor, list[EventTrace]]:
        """The newest `limit` events accepted after `cursor` (`here_only`: by this replica;
        none a flood's sampling left out), oldest first, and the cursor to pass next."""
        now = self.cursor()
        keys = self._accepted_after(cursor, limit, here_only)
        return now, [self._trace(key) for _, key in reversed(keys)]

    def changed_since(self, cursor: Cursor, limit: int) -> tuple[Cursor, list[EventTrace]]:
        """The `limit` events that changed last after `cursor` — accepted, or a step of their
        delivery settled — in the order they last changed, and the cursor to pass next.

        However many events changed, this builds at most `limit` traces: a reader that polls
        a tick at a time costs the accept path nothing (a flood costs it a counter). While
        events are kept, those a flood's sampling left out are not reported: there is
        nothing to show of them but their name."""
        now = self.cursor()
        if now == cursor:
            return now, []
        self._index()
        accepted = self._accepted
        settled: list[tuple[float, Key]] = []  # newest first
        seen: set[Key] = set()
        fresh = min(now.settled - cursor.settled, len(self._settlements))
        budget = _SCAN_PER_ROW * limit  # a flood's settlements name mostly unkept events
        for settlement in itertools.islice(reversed(self._settlements), fresh):
            pixel, at = settlement.pixel, settlement.at
            for name, event_id in itertools.islice(reversed(settlement.events), budget):
                key = (pixel, name, event_id)
                entry = accepted.get(key)
                if entry is not None and entry[2] is not UNKEPT and key not in seen:
                    seen.add(key)
                    settled.append((at, key))
            budget -= len(settlement.events)
            if len(settled) >= limit or budget <= 0:
                break
        changes = [*reversed(settled), *reversed(self._accepted_after(cursor, limit, False))]
        latest: dict[Key, None] = {}
        for _, key in sorted(changes, key=lambda change: change[0]):  # stable: ties keep order
            latest.pop(key, None)
            latest[key] = None
        return now, [self._trace(key) for key in list(latest)[-limit:]]

    def _accepted_after(
        self, cursor: Cursor, limit: int, here_only: bool
    ) -> list[tuple[float, Key]]:
        """(time, key) of the newest `limit` events accepted after `cursor`, newest first;
        none a flood's sampling left out."""
        accepted, found = self._accepted, []
        for key in reversed(accepted):  # in the order of their last accept
            at, _, event, replica, sequence = accepted[key]
            if sequence <= cursor.accepted:
                break
            if not (here_only and replica) and event is not UNKEPT:
                found.append((at, key))
                if len(found) >= limit:
                    break
        return found

    def _trace(self, key: Key) -> EventTrace:
        at, source, kept, replica, _ = self._accepted[key]
        event = kept if isinstance(kept, Event) else None
        return EventTrace(*key, source, at, event, list(self._steps.get(key, ())), replica)


class _Settlements:
    """Settlements, oldest first: at most `count` of them, naming at most `named` events
    between them (the newest is always kept, however many it names)."""

    def __init__(self, count: int, named: int) -> None:
        self._items: collections.deque[Settlement] = collections.deque()
        self._count = count
        self._named = named
        self._events = 0

    def __len__(self) -> int:
        return len(self._items)

    def __reversed__(self) -> Iterator[Settlement]:
        return reversed(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self._count or self._events >= self._named

    def append(self, settlement: Settlement, *, trim: bool = True) -> None:
        """Add the newest; `trim`: drop the oldest beyond the bounds."""
        self._items.append(settlement)
        self._events += len(settlement.events)
        while (
            trim
            and len(self._items) > 1
            and (len(self._items) > self._count or self._events > self._named)
        ):
            self.popleft()

    def popleft(self) -> Settlement:
        settlement = self._items.popleft()
        self._events -= len(settlement.events)
        return settlement
