"""Recovered conversions: browser events whose TikTok pixel copy was blocked or missing.

The snippet reports with each event whether the page's pixel (`ttq`) had loaded, had failed
to load (`blocked`, an ad blocker say) or was not there (`absent`). Counted per pixel, event
name and state, as stored for delivery: `blocked` + `absent` are the conversions TikTok
would not have seen without the gateway — the figure a marketer asks for. Counted like the
score histogram: one dict increment per browser event, the metric built at scrape time, at
most `max_series` event names per pixel before new ones count as "other".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from gateway.core.event import Event
from gateway.ingest.policy import SourcePolicy

RECOVERED = ("blocked", "absent")


class RecoveredConversions(Collector):
    """Browser events counted by what became of their pixel copy; `recovered` per pixel."""

    def __init__(self, registry: CollectorRegistry, *, max_series: int = 500) -> None:
        self._counts: dict[tuple[str, str, str], int] = {}
        self._names: set[tuple[str, str]] = set()
        self._max_series = max_series
        registry.register(self)

    def accepted(self, events: Sequence[Event], policy: SourcePolicy) -> None:
        """An accept hook: count browser events by what their pixel copy became."""
        for event in events:
            observed = event.observed
            state = observed.pixel_copy if observed is not None else ""
            if not state:
                continue
            pixel, name = event.destination.event_source_id, event.event
            if (pixel, name) not in self._names:
                if len(self._names) >= self._max_series:
                    name = "other"
                self._names.add((pixel, name))
            key = (pixel, name, state)
            self._counts[key] = self._counts.get(key, 0) + 1

    def recovered(self, pixel: str) -> int:
        """Events of `pixel` the gateway stored while the pixel's own copy was lost."""
        return sum(
            n for (p, _, state), n in self._counts.items() if p == pixel and state in RECOVERED
        )

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "tiktok_gateway_browser_events_by_pixel_copy",
            "Browser events stored, by what became of the TikTok pixel's own copy "
            "(loaded, blocked, absent); blocked + absent are recovered conversions",
            labels=["pixel", "event", "pixel_copy"],
        )
        for (pixel, name, state), count in sorted(self._counts.items()):
            family.add_metric([pixel, name, state], count)
        yield family
