"""The counters the ingest path and its sources write, as the ingest layer sees them.

`telemetry.metrics.Metrics` provides them (it is built above this layer, with the rest of
what `/metrics` exports); naming only what ingest writes keeps ingest from importing the
whole metrics module, and a test double from having to build one.
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import Counter


class IngestCounters(Protocol):
    """What every source counts: received, dropped, left out, scrubbed, fixed up."""

    received: dict[str, int]
    """source → events stored: a tally read at scrape time (telemetry.metrics)."""
    dropped: Counter
    invalid_forwarded_hops: Counter
    identifiers_dropped: Counter
    personal_data_scrubbed: Counter
    postbacks: Counter
    postback_rules_skipped: Counter
    postback_unfilled_macros: Counter
    relay_fixups: dict[str, int]
