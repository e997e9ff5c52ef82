"""Prometheus metrics, one registry per app (no global state), served at /metrics.

Counters say what became of events the gateway saw but did not forward (bots, tag testers,
no consent, unparseable identifiers) — the numbers an operator needs to trust the pipeline —
and the dispatcher's own counts are read live at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.delivery.options import DeliveryStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _DeliveryCollector(Collector):
    def __init__(self, stats: Callable[[], DeliveryStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._stats()
        if stats is None:
            return
        for name, value, doc in (
            ("requests", stats.requests, "Events API requests sent"),
            ("delivered", stats.delivered, "Events TikTok accepted"),
            ("retried", stats.retried, "Events scheduled for a retry"),
            ("dead_lettered", stats.dead_lettered, "Events moved to the dead letters"),
            (
                "isolation_requests",
                stats.isolation_requests,
                "Extra requests sent to isolate refused events in a refused batch",
            ),
            (
                "outcomes_dropped",
                stats.outcomes_dropped,
                "Batch outcomes not reported to the serving process (it fell behind)",
            ),
        ):
            yield CounterMetricFamily(f"tiktok_gateway_delivery_{name}", doc, value=value)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.received = Counter(
            "tiktok_gateway_events_received",
            "Events accepted into the outbox, by source",
            ["source"],
            registry=self.registry,
        )
        self.dropped = Counter(
            "tiktok_gateway_events_dropped",
            "Events seen but not forwarded, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.invalid_forwarded_hops = Counter(
            "tiktok_gateway_invalid_forwarded_hops",
            "Hops of X-Forwarded-For / Forwarded from a trusted proxy that were no IP address",
            registry=self.registry,
        )
        self.identifiers_dropped = Counter(
            "tiktok_gateway_identifiers_dropped",
            "Identifier values left out of an event because they could not be normalised",
            registry=self.registry,
        )
        self.relay_fixups = Counter(
            "tiktok_gateway_relay_fixups",
            "What the TikTok-compatible relay changed in stored requests, by kind "
            "(raw identifiers hashed, digests passed through, numeric event ids, ms / ISO "
            "times, legacy event names, 1.0 events translated, requests over 1,000 split)",
            ["kind"],
            registry=self.registry,
        )
        self._delivery: Callable[[], DeliveryStats | None] = lambda: None
        self.registry.register(_DeliveryCollector(lambda: self._delivery()))

    def watch_delivery(self, stats: Callable[[], DeliveryStats | None]) -> None:
        self._delivery = stats

    def render(self) -> bytes:
        return generate_latest(self.registry)
