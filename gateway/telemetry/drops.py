"""The latest dropped and refused events, and why: what the console shows beside accepted ones.

`RecentDrops` is a pipeline drop hook: each drop costs a counter and, for those kept, one
tuple of its reason and four ids (pixel, event name, event_id, order_id; bounded, scrubbed
when read); nothing else of the raw input is kept. Under a flood only every n-th drop is kept,
n adapted every quarter second, as `RecentEvents` samples accepted events. Read by cursor.
Why: docs/design/drops.md.
"""

from __future__ import annotations

import collections
import itertools
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.privacy.redact import redact_text
from gateway.privacy.scrub import OverBudget, ScanBudget

_WINDOW_SECONDS = 0.25
_MAX_ID = 128
_PLAIN_ID = re.compile(r"[A-Za-z0-9._~/-]{1,128}")


@dataclass(frozen=True, slots=True)
class Dropped:
    """One event (or a request with none read) the gateway did not keep, and why."""

    sequence: int
    at: float
    source: str
    reason: str
    """bot, no_consent, tag_testing, origin_not_allowed, rate_limited, invalid, too_old…"""
    detail: str
    """The bot rule, the field at fault, whether consent was denied or not given."""
    pixel: str
    event: str
    event_id: str
    order_id: str


class RecentDrops:
    """A bounded buffer of the latest drops, read by cursor (a sequence number)."""

    def __init__(
        self,
        capacity: int = 1000,
        *,
        clock: Callable[[], float] = time.time,
        keep_per_second: float = 400.0,
    ) -> None:
        self._rows: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=capacity)
        self._clock = clock
        self._keep_per_second = keep_per_second
        self._count = 0
        self._kept_every = 1
        self._countdown = 0
        self._window_at = self._last_at = clock()
        self._window_count = 0

    @property
    def keep_every(self) -> int:
        """1, or n while only every n-th drop is kept (until a quiet quarter second)."""
        if self._clock() - self._last_at >= _WINDOW_SECONDS:
            return 1
        return self._kept_every

    def dropped(
        self, reason: str, source: str, detail: str, items: Sequence[Any], pixel: str
    ) -> None:
        """The pipeline's drop hook: of `items` (the raw inputs) only four ids are kept,
        bounded; they are scrubbed when read. On the path of every bot's beacon: inlined."""
        now = self._clock()
        if now - self._window_at >= _WINDOW_SECONDS:
            self._adapt(now)
        self._last_at = now
        count, countdown = self._count, self._countdown
        for raw in items or _NO_ITEMS:
            count += 1
            countdown -= 1
            if countdown > 0:
                continue
            countdown = self._kept_every
            if raw.__class__ is not dict:
                self._rows.append((count, now, source, reason, detail, pixel, *_NO_IDS))
                continue
            get = raw.get
            named, event, event_id = (
                get("pixel_id") or get("pixel_code"),
                get("event"),
                get("event_id"),
            )
            properties = get("properties")
            order = properties.get("order_id") if properties.__class__ is dict else None
            ids: tuple[Any, ...] = (named, event, event_id, order)
            for value in ids:  # a loop, not all(): a generator costs this path half of it
                if value is not None and (value.__class__ is not str or len(value) > _MAX_ID):
                    ids = tuple(map(_cut, ids))  # rare: a long id, a number, a list…
                    break
            self._rows.append((count, now, source, reason, detail, pixel, *ids))
        self._count, self._countdown = count, countdown

    def _adapt(self, now: float) -> None:
        """A window ended: keep every n-th drop from now on, n from its rate."""
        rate = (self._count - self._window_count) / (now - self._window_at)
        self._kept_every = max(1, math.ceil(rate / self._keep_per_second))
        self._countdown = min(self._countdown, self._kept_every)
        self._window_at, self._window_count = now, self._count

    def cursor(self) -> int:
        return self._count

    def since(self, cursor: int, limit: int) -> tuple[int, list[Dropped]]:
        """The newest `limit` drops kept after `cursor`, oldest first, and the next cursor."""
        found: list[tuple[Any, ...]] = []
        for row in reversed(self._rows):
            if row[0] <= cursor or len(found) >= limit:
                break
            found.append(row)
        return self._count, [_shown(row) for row in reversed(found)]

    def latest(self, limit: int) -> list[Dropped]:
        """Newest first."""
        return [_shown(row) for row in itertools.islice(reversed(self._rows), limit)]

    def search(self, wanted: str) -> list[Dropped]:
        """Drops still kept whose event_id or order_id is `wanted`, newest first."""
        shown = (_shown(row) for row in reversed(self._rows))
        return [drop for drop in shown if wanted in (drop.event_id, drop.order_id)]


_NO_ITEMS = (None,)
_NO_IDS = (None, None, None, None)


def _cut(value: Any) -> str | int | None:
    if value.__class__ is str:
        return value[:_MAX_ID]
    return value if value.__class__ is int else None


def _shown(row: tuple[Any, ...]) -> Dropped:
    """What may be shown of a kept drop: names and ids, scrubbed; nothing else of the input."""
    sequence, at, source, reason, detail, pixel, named, event, event_id, order = row
    return Dropped(
        sequence,
        at,
        source,
        reason,
        detail,
        _identifier(named) or pixel,
        _identifier(event),
        _identifier(event_id),
        _identifier(order),
    )


def _identifier(value: object) -> str:
    """An id from an input that was not parsed: bounded, and with any email or `+` phone
    number redacted (a raw email in an invalid payload never reaches the page)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    text = str(value)[:_MAX_ID]
    if _PLAIN_ID.fullmatch(text):
        return text
    try:
        return redact_text(text, national=False, budget=ScanBudget(16))
    except OverBudget:
        return "(redacted)"
