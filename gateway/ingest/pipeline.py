"""The one path every source takes once it holds input events: parse, store durably, tell.

Sources read their wire format into `Item`s and come in through `ingest` (all or nothing:
the first error, placed at `events[i]`) or `ingest_each` (each group on its own: postback
rules); a file import's chunks parsed elsewhere come in through `store_parsed`. All three
return once the outbox has the events (a 2xx always means "stored"), then run the accept
hooks (wake delivery, record for the console, remember lead context), and count.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.core.errors import EventError
from gateway.core.event import Event
from gateway.ingest.counters import IngestCounters
from gateway.ingest.parser import Parsed, ParseRules, parse_event
from gateway.ingest.policy import Item, SourcePolicy
from gateway.ingest.refusals import DropHook, refusal
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
        self._drop_hooks: list[DropHook] = []
        self._last_refused: weakref.ref[BaseException] | None = None
        """The latest error told to the drop hooks, weakly: its traceback holds the request."""

    def reconfigure(self, settings: Settings) -> None:
        """Take a reloaded configuration's pixels (one reference: a lookup sees old or new)."""
        self._pixels = settings.pixels_by_id

    def on_accept(self, hook: AcceptHook) -> None:
        """Run `hook` after every stored request (it must be quick and must not raise)."""
        self._accept_hooks.append(hook)

    def on_drop(self, hook: DropHook) -> None:
        """Run `hook` for every drop and refusal (it must be quick and must not raise)."""
        self._drop_hooks.append(hook)

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

    async def ingest(
        self, items: Sequence[Item], policy: SourcePolicy, *, indexed: str | None = None
    ) -> list[Event]:
        """Parse every item, then store all or nothing; returns the stored events.

        The first item's error is raised, placed at `indexed[i]`."""
        now = self.now()
        results: list[Parsed] = []
        for index, item in enumerate(items):
            try:
                results.append(parse_item(item, self.rules, policy, now))
            except EventError as exc:
                error = placed(exc, indexed, index)
                self.refused(error, policy.name, [i.raw for i in items], item.pixel.id)
                raise error from None
        self._count(results)
        events = [event for parsed in results for event in parsed.events]
        await self._store(events, policy)
        return events

    async def ingest_each(
        self, groups: Sequence[Sequence[Item]], policy: SourcePolicy, *, store: bool = True
    ) -> list[list[Event] | EventError]:
        """Each group parsed on its own (all or nothing within it); every good group's events
        stored together, in one write. `store=False` (a dry run) parses and stores nothing."""
        now = self.now()
        results: list[list[Event] | EventError] = []
        parsed: list[Parsed] = []
        for group in groups:
            try:
                mine = [parse_item(item, self.rules, policy, now) for item in group]
            except EventError as exc:
                results.append(exc)
                if store and group:
                    self.refused(exc, policy.name, [i.raw for i in group], group[0].pixel.id)
                continue
            parsed.extend(mine)
            results.append([event for one in mine for event in one.events])
        if store:
            self._count(parsed)
            await self._store(
                [e for r in results if not isinstance(r, EventError) for e in r], policy
            )
        return results

    async def store_parsed(
        self, parsed: Sequence[Event] | Prepared, policy: SourcePolicy, *, checkpoint: str
    ) -> None:
        """Store a chunk parsed elsewhere (a file import's thread or worker process), with
        its checkpoint in the same transaction. Events serialised by a worker (`Prepared`)
        exist in no object here, so no accept hook could see them: with hooks registered
        they are refused (AssertionError), never stored past them."""
        if isinstance(parsed, Prepared):
            assert not self._accept_hooks, "prepared events would bypass the accept hooks"
            await self.outbox.add_prepared(parsed, checkpoint=checkpoint)
            if parsed.count:
                self._tally_received(policy, parsed.count)
            return
        await self._store(parsed, policy, checkpoint=checkpoint)

    def _count(self, results: Sequence[Parsed]) -> None:
        if len(results) == 1 and not results[0].warnings and not results[0].scrubbed:
            return  # a beacon's usual event: nothing left out or scrubbed, nothing to count
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

    async def _store(
        self, events: Sequence[Event], policy: SourcePolicy, *, checkpoint: str | None = None
    ) -> None:
        """Store durably (raises OutboxUnavailable), count, then run the accept hooks."""
        if events or checkpoint is not None:
            await self.outbox.add(events, checkpoint=checkpoint)
        if not events:
            return
        self._tally_received(policy, len(events))
        for hook in self._accept_hooks:
            try:
                hook(events, policy)
            except Exception:  # a hook is an observer: the events are stored all the same
                log.exception("an accept hook failed")

    def _tally_received(self, policy: SourcePolicy, count: int) -> None:
        received = self.metrics.received
        received[policy.name] = received.get(policy.name, 0) + count

    def dropped(
        self,
        reason: str,
        count: int = 1,
        *,
        source: str = "",
        detail: str = "",
        items: Sequence[Any] = (),
        pixel: str = "",
    ) -> None:
        """Events seen on purpose not forwarded (bots, no consent, tag testing): counted,
        and told to the drop hooks with `detail` (the bot rule) and their raw `items`."""
        self.metrics.dropped.labels(reason).inc(count)
        for hook in self._drop_hooks:  # as _tell, one call less: every bot's beacon runs it
            try:
                hook(reason, source, detail, items, pixel)
            except Exception:
                log.exception("a drop hook failed")

    def refused(
        self, error: BaseException, source: str, items: Sequence[Any] = (), pixel: str = ""
    ) -> None:
        """An input answered with `error`: told to the drop hooks (counted where refused)."""
        try:
            self._last_refused = weakref.ref(error)
        except TypeError:  # a built-in exception: no weak reference, and no need of one
            self._last_refused = None
        reason, detail = refusal(error)
        self._tell(reason, source, detail, items, pixel)

    def told(self, error: BaseException) -> bool:
        """Whether `error` was told to the drop hooks already (by `ingest`, say)."""
        return self._last_refused is not None and self._last_refused() is error

    def _tell(
        self, reason: str, source: str, detail: str, items: Sequence[Any], pixel: str
    ) -> None:
        for hook in self._drop_hooks:
            try:
                hook(reason, source, detail, items, pixel)
            except Exception:  # an observer: the answer is the same
                log.exception("a drop hook failed")


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
