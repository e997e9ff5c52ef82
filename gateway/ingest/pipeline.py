"""The one path every source takes after parsing: pick the pixel, store durably, wake delivery.

Sources (the server API, the browser beacon, file imports) differ in how they read input;
from the moment they hold `Event`s they all call `Pipeline.accept`, which returns only once
the outbox has the events, so a 2xx to the sender always means "stored".
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from gateway.core.errors import EventError
from gateway.core.event import Event
from gateway.delivery.dispatcher import Delivery
from gateway.ingest.parser import ParseRules
from gateway.outbox import Outbox
from gateway.settings import PixelConfig, Settings


class Pipeline:
    def __init__(self, settings: Settings, outbox: Outbox, delivery: Delivery | None) -> None:
        self.settings = settings
        self.rules = ParseRules.from_settings(settings)
        self.outbox = outbox
        self._delivery = delivery
        self._pixels = {p.id: p for p in settings.pixels}

    def pixel(self, pixel_id: object, field: str = "pixel_id") -> PixelConfig:
        """The configured pixel named by an input, or the only one when the input names none."""
        if pixel_id is None:
            if len(self._pixels) == 1:
                return next(iter(self._pixels.values()))
            raise EventError(field, "required: several pixels are configured")
        if not isinstance(pixel_id, str) or pixel_id not in self._pixels:
            raise EventError(field, "is not a configured pixel")
        return self._pixels[pixel_id]

    @staticmethod
    def now() -> float:
        return time.time()

    async def accept(self, events: Sequence[Event]) -> None:
        """Store events durably (raises OutboxUnavailable), then wake delivery."""
        if not events:
            return
        await self.outbox.add(events)
        if self._delivery is not None:
            self._delivery.notify()
