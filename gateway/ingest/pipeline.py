"""The one path every source takes once it holds input events: parse, store durably, tell.

A source reads its own wire format into `Item`s (the raw event, its pixel, what the server
observed) and calls `Pipeline.ingest(items, policy)`. Here, once for every source:

- each item is parsed under the source's `SourcePolicy`; an error names the item's place
  in the request (`events[3].user.email`) — one bad item refuses the whole request, so a
  retry after the fix cannot half-duplicate;
- values left out (unparseable phones) and values scrubbed of personal data are counted
  in metrics;
- the events are stored durably; `ingest` returns only once the outbox has them, so a 2xx
  to the sender always means "stored", and "cannot store now" is `OutboxUnavailable`,
  which each surface's renderer answers in its own format;
- accept hooks run: delivery is woken, the recent-events buffer records them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.core.errors import EventError
from gateway.core.event import Event
from gateway.ingest.counters import IngestCounters
from gateway.ingest.parser import Parsed, ParseRules, parse_event
from gateway.ingest.policy import Item, SourcePolicy
from gateway.settings import PixelConfig, Settings, pick_pixel
from gateway.storage.outbox import Outbox, Prepared

log = logging.getLogger(__name__)
AcceptHook = Callable[[Sequence[Event], SourcePolicy], None]
"""Called with the events of every stored request, and the policy of their source."""


def placed(error: EventError, indexed: str | None, index: int) -> EventError:
    """The error naming the item's place in the request: `events[3].user.email`.

    `indexed` is the name of the list the items came in (`"events"`, or `""` for a
    top-level array); None for a request of one unlisted event, whose fields need no place.
    (A plain function for `except` clauses: a context manager per item costs the beacon.)
    """
    return error.at(f"{indexed}[{index}]") if indexed is not None else error


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        metrics: IngestCounters,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.rules = ParseRules.from_settings(settings)
        self.outbox = outbox
        self.metrics = metrics
        self.now = clock
        self._pixels = settings.pixels_by_id
        self._accept_hooks: list[AcceptHook] = []
        self._received: dict[str, Any] = {}  # the metric's child per source, looked up once

    def reconfigure(self, settings: Settings) -> None:
        """Take a reloaded configuration's pixels (one reference: a lookup sees old or new)."""
        self._pixels = settings.pixels_by_id

    def on_accept(self, hook: AcceptHook) -> None:
        """Run `hook` after every stored request (it must be quick and must not raise)."""
        self._accept_hooks.append(hook)

    @property
    def pixels(self) -> Mapping[str, PixelConfig]:
        """The pixel table now, by id: a request that awaits before it resolves its pixels
        takes it with the rest of the configuration it judges by, and passes it to `pixel`."""
        return self._pixels

    def pixel(
        self,
        pixel_id: object,
        field: str = "pixel_id",
        *,
        table: Mapping[str, PixelConfig] | None = None,
    ) -> PixelConfig:
        """The configured pixel named by an input, or the only one when the input names none
        (in `table`, a table taken earlier from `pixels`; by default the one now)."""
        return pick_pixel(self._pixels if table is None else table, pixel_id, field)

    @property
    def pixel_ids(self) -> list[str]:
        """The pixels configured now (after the latest reload)."""
        return list(self._pixels)

    def parse(
        self, items: Sequence[Item], policy: SourcePolicy, *, indexed: str | None = None
    ) -> list[Event]:
        """Every item's events, or the first item's error placed at `indexed[i]`."""
        now = self.now()
        results: list[Parsed] = []
        for index, item in enumerate(items):
            try:
                results.append(self._parse_one(item, policy, now))
            except EventError as exc:
                raise placed(exc, indexed, index) from None
        self._count(results)
        return [event for parsed in results for event in parsed.events]

    def parse_each(self, items: Sequence[Item], policy: SourcePolicy) -> list[Parsed | EventError]:
        """Each item on its own: its events and warnings, or its error (file imports, where
        one bad row is reported and the others go)."""
        results = parse_each(items, self.rules, policy, self.now())
        self._count([r for r in results if not isinstance(r, EventError)])
        return results

    def _parse_one(self, item: Item, policy: SourcePolicy, now: float) -> Parsed:
        return parse_item(item, self.rules, policy, now)

    def _count(self, results: Sequence[Parsed]) -> None:
        self.count_parsed(
            sum(len(parsed.warnings) for parsed in results),
            [field for parsed in results for field in parsed.scrubbed],
        )

    def count_parsed(self, left_out: int, scrubbed: Sequence[str]) -> None:
        """What parsing left out or scrubbed, in the metrics (every source alike; imports
        parsed in worker processes report it here)."""
        if left_out:
            self.metrics.identifiers_dropped.inc(left_out)
        for field in scrubbed:
            self.metrics.personal_data_scrubbed.labels(field).inc()

    async def store(
        self, events: Sequence[Event], policy: SourcePolicy, *, checkpoint: str | None = None
    ) -> None:
        """Store events durably (raises OutboxUnavailable), count them, run the hooks.

        `checkpoint` (imports) is recorded in the same transaction as the events, so "this
        chunk is stored" is true exactly when its events are."""
        if events or checkpoint is not None:
            await self.outbox.add(events, checkpoint=checkpoint)
        if not events:
            return
        received = self._received.get(policy.name)
        if received is None:
            received = self._received[policy.name] = self.metrics.received.labels(policy.name)
        received.inc(len(events))
        for hook in self._accept_hooks:
            try:
                hook(events, policy)
            except Exception:  # a hook is an observer: the events are stored all the same
                log.exception("an accept hook failed")

    async def store_prepared(
        self, prepared: Prepared, policy: SourcePolicy, *, checkpoint: str | None = None
    ) -> None:
        """`store` of events a worker process parsed and serialised (`Outbox.prepare`): no
        accept hook runs, as no event object exists in this process (the import command's
        own process, where nothing observes them)."""
        await self.outbox.add_prepared(prepared, checkpoint=checkpoint)
        if prepared.count:
            self.metrics.received.labels(policy.name).inc(prepared.count)

    async def ingest(
        self, items: Sequence[Item], policy: SourcePolicy, *, indexed: str | None = None
    ) -> list[Event]:
        """Parse every item, then store all or nothing; returns the stored events."""
        events = self.parse(items, policy, indexed=indexed)
        await self.store(events, policy)
        return events

    def dropped(self, reason: str, count: int = 1) -> None:
        """Events seen on purpose not forwarded (bots, no consent, tag testing)."""
        self.metrics.dropped.labels(reason).inc(count)


def parse_each(
    items: Sequence[Item], rules: ParseRules, policy: SourcePolicy, now: float
) -> list[Parsed | EventError]:
    """Each item parsed on its own, with no metrics: what `Pipeline.parse_each` counts, and
    what an import's worker process runs."""
    results: list[Parsed | EventError] = []
    for item in items:
        try:
            results.append(parse_item(item, rules, policy, now))
        except EventError as exc:
            results.append(exc)
    return results


def parse_item(item: Item, rules: ParseRules, policy: SourcePolicy, now: float) -> Parsed:
    """One item through the shared parser (EventError when it is refused)."""
    return parse_event(
        item.raw,
        pixel=item.pixel,
        rules=rules,
        now=now,
        policy=policy,
        observed=item.observed,
        test_event_code=item.test_event_code,
    )
