"""`tiktok_gateway_match_key_score`: the match-key score of stored events, per pixel and event.

The score is a whole number from 0 to 10, so a histogram with a bucket per score is exactly
a count per (pixel, event name, score): the accept hook adds one to a dict entry (no lock,
no label lookup in prometheus_client), and the cumulative buckets are built when Prometheus
scrapes. Event names are free text unless `strict_event_names` is set, so past
`max_series` pairs new names are counted as "other": a typo loop cannot grow /metrics.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from gateway.core.event import Event
from gateway.core.score import MAX_SCORE, score
from gateway.ingest.policy import SourcePolicy

_OTHER = "other"


class ScoreHistogram(Collector):
    def __init__(self, registry: CollectorRegistry, *, max_series: int = 500) -> None:
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._max_series = max_series
        registry.register(self)

    def accepted(self, events: Sequence[Event], policy: SourcePolicy) -> None:
        """An accept hook: count each stored event's score."""
        counts = self._counts
        for event in events:
            key = (event.destination.event_source_id, event.event)
            per_score = counts.get(key)
            if per_score is None:
                if len(counts) >= self._max_series:
                    key = (key[0], _OTHER)
                per_score = counts.setdefault(key, [0] * (MAX_SCORE + 1))
            per_score[score(event.user)] += 1

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "tiktok_gateway_match_key_score",
            "Match-key score (0-10, the gateway's own estimate) of stored events",
            labels=["pixel", "event"],
        )
        for (pixel, event), per_score in sorted(self._counts.items()):
            buckets, running, total = [], 0, 0
            for value, count in enumerate(per_score):
                running += count
                total += value * count
                buckets.append((str(float(value)), running))
            buckets.append(("+Inf", running))
            family.add_metric([pixel, event], buckets, sum_value=total)
        yield family
