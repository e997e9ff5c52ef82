"""Prometheus metrics, one registry per app (no global state), served at /metrics.

Counters say what became of events the gateway saw but did not forward (bots, tag testers,
no consent, unparseable identifiers) and which values lost personal data on the way — the
numbers an operator needs to trust the pipeline — and the dispatcher's own counts are read
live at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.delivery.options import DeliveryStats
from gateway.storage.leads.base import ContextStats
from gateway.storage.outbox.guard import BacklogGuard

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
            (
                "token_refused",
                stats.token_refused,
                "Events dead-lettered because TikTok refused the access token (40105) or its "
                "scope (40001): an operator must fix the token, then replay them",
            ),
        ):
            yield CounterMetricFamily(f"tiktok_gateway_delivery_{name}", doc, value=value)


class _ReloadCollector(Collector):
    def __init__(self, counts: Callable[[], tuple[int, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        applied, refused = self._counts()
        family = CounterMetricFamily(
            "tiktok_gateway_config_reloads",
            "Configuration reloads (SIGHUP or a changed file), by result (applied, refused: "
            "the running configuration was kept)",
            labels=["result"],
        )
        family.add_metric(["applied"], applied)
        family.add_metric(["refused"], refused)
        yield family


class _BacklogCollector(Collector):
    def __init__(self, guard: Callable[[], BacklogGuard | None]) -> None:
        self._guard = guard

    def collect(self) -> Iterator[GaugeMetricFamily]:
        guard = self._guard()
        backlog = guard.backlog if guard is not None else None
        if guard is None or backlog is None:
            return
        yield GaugeMetricFamily(
            "tiktok_gateway_outbox_stored_bytes",
            "What the outbox holds (SQLite file and WAL, or Redis memory)",
            value=backlog.stored_bytes,
        )
        if backlog.oldest_age_seconds is not None:
            yield GaugeMetricFamily(
                "tiktok_gateway_outbox_oldest_age_seconds",
                "Age of the oldest undelivered event",
                value=backlog.oldest_age_seconds,
            )
        if backlog.free_bytes is not None:
            yield GaugeMetricFamily(
                "tiktok_gateway_outbox_free_bytes",
                "Room left where the outbox grows (disk, or Redis maxmemory)",
                value=backlog.free_bytes,
            )
        yield GaugeMetricFamily(
            "tiktok_gateway_shedding",
            "1 while browser events are refused because the backlog is past a limit",
            value=1 if guard.shedding else 0,
        )


class _ContextCollector(Collector):
    def __init__(self, stats: Callable[[], ContextStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._stats()
        if stats is None:
            return
        yield CounterMetricFamily(
            "tiktok_gateway_lead_context_hits",
            "Backend events (postbacks, server events) that found their lead's browser context",
            value=stats.hits,
        )
        yield CounterMetricFamily(
            "tiktok_gateway_lead_context_misses",
            "Backend events with an identity key that found no browser context",
            value=stats.misses,
        )
        yield GaugeMetricFamily(
            "tiktok_gateway_lead_context_entries",
            "Identity keys remembered (as of the last sweep)",
            value=stats.entries,
        )
        browser = CounterMetricFamily(
            "tiktok_gateway_lead_context_browser_keys",
            "Identity keys browsers sent, by outcome: remembered, beyond_bound (more than a "
            "beacon may leave), rate_limited (the address's new keys per minute)",
            labels=["outcome"],
        )
        for outcome in ("remembered", "beyond_bound", "rate_limited"):
            browser.add_metric([outcome], stats.browser_keys.get(outcome, 0))
        yield browser
        yield CounterMetricFamily(
            "tiktok_gateway_lead_context_refused",
            "Browser writes refused because another visitor's entry holds the identity key",
            value=stats.refused,
        )
        yield CounterMetricFamily(
            "tiktok_gateway_lead_context_evicted",
            "Unexpired entries evicted to stay within context_max_entries",
            value=stats.evicted,
        )


class _TallyCollector(Collector):
    """A labelled counter its owner keeps as a plain dict, read at scrape time: one `+=` on
    the event loop instead of prometheus_client's lock and calls (~5,000 instructions per
    increment), for counts taken on every request."""

    def __init__(self, name: str, doc: str, label: str, tally: dict[str, int]) -> None:
        self._name, self._doc, self._label, self._tally = name, doc, label, tally

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._doc, labels=[self._label])
        for value, count in list(self._tally.items()):
            family.add_metric([value], count)
        yield family


class Metrics:
    """The gateway's metrics: counters its code increments, and figures read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._declare_events()
        self._declare_guards()
        self._declare_sources()
        self._declare_watched()

    def _declare_events(self) -> None:
        """What became of events: received, dropped, and values that lost data on the way."""
        self.received: dict[str, int] = {}
        """source → events stored (a tally: every stored request adds to it)."""
        self.registry.register(
            _TallyCollector(
                "tiktok_gateway_events_received",
                "Events accepted into the outbox, by source",
                "source",
                self.received,
            )
        )
        self.dropped = Counter(
            "tiktok_gateway_events_dropped",
            "Events seen but not forwarded, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.identifiers_dropped = Counter(
            "tiktok_gateway_identifiers_dropped",
            "Identifier values left out of an event because they could not be normalised",
            registry=self.registry,
        )
        self.personal_data_scrubbed = Counter(
            "tiktok_gateway_personal_data_scrubbed",
            "Values whose emails, phone numbers or personal query parameters were removed, "
            "by field (page.url, page.referrer, properties, contents, user, app, ad, lead)",
            ["field"],
            registry=self.registry,
        )

    def _declare_guards(self) -> None:
        """Requests the gateway's guards refused or distrusted."""
        self.invalid_forwarded_hops = Counter(
            "tiktok_gateway_invalid_forwarded_hops",
            "Hops of X-Forwarded-For / Forwarded from a trusted proxy that were no IP address",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "tiktok_gateway_rate_limited",
            "Requests refused (429) because their client was over its rate limit, by endpoint",
            ["endpoint"],
            registry=self.registry,
        )
        self.failed_auth = Counter(
            "tiktok_gateway_failed_authentications",
            "Requests with a missing or wrong API key, token or source secret, by endpoint "
            "(past [rate_limit] failed_auth_per_minute a client is refused: rate_limited "
            '{endpoint="failed_auth"})',
            ["endpoint"],
            registry=self.registry,
        )
        self.shed = Counter(
            "tiktok_gateway_beacons_shed",
            "Beacons refused (503) while the outbox backlog was past a limit",
            registry=self.registry,
        )
        self.connections_refused = Counter(
            "tiktok_gateway_connections_refused",
            "Connections refused (503) or closed to make room, by reason: per_client (the "
            "address held its share), full (every connection taken), evicted (given up by "
            "the address holding the most)",
            ["reason"],
            registry=self.registry,
        )

    def connection_refused(self, reason: str) -> None:
        """For the guarded protocol (`uvicorn_config(on_refused=...)`)."""
        self.connections_refused.labels(reason).inc()

    def _declare_sources(self) -> None:
        """What the relay fixed and what postbacks fired."""
        self.relay_fixups: dict[str, int] = {}
        """kind → count; the relay adds to it on every stored request (a tally, see above)."""
        self.registry.register(
            _TallyCollector(
                "tiktok_gateway_relay_fixups",
                "What the TikTok-compatible relay changed in stored requests, by kind "
                "(raw identifiers hashed, digests passed through, numeric event ids, ms / ISO "
                "times, legacy event names, 1.0 events translated, requests over 1,000 split)",
                "kind",
                self.relay_fixups,
            )
        )
        self.postbacks = Counter(
            "tiktok_gateway_postbacks",
            "Postbacks answered, by source and result (fired, none, invalid)",
            ["source", "result"],
            registry=self.registry,
        )
        self.postback_rules_skipped = Counter(
            "tiktok_gateway_postback_rules_skipped",
            "Rules that matched a postback but could not build a valid event, by source",
            ["source"],
            registry=self.registry,
        )
        self.postback_unfilled_macros = Counter(
            "tiktok_gateway_postback_unfilled_macros",
            "Postback values that were a platform's unfilled macro ({x}, #x#, [x]): absent",
            ["source"],
            registry=self.registry,
        )

    def _declare_watched(self) -> None:
        """Figures owned elsewhere (lead context, delivery, backlog, reloads), read at scrape
        time once their owner is given to a `watch_*` method."""
        self._context: Callable[[], ContextStats | None] = lambda: None
        self.registry.register(_ContextCollector(lambda: self._context()))
        self._delivery: Callable[[], DeliveryStats | None] = lambda: None
        self.registry.register(_DeliveryCollector(lambda: self._delivery()))
        self._guard: BacklogGuard | None = None
        self.registry.register(_BacklogCollector(lambda: self._guard))
        self._reloads: Callable[[], tuple[int, int]] = lambda: (0, 0)
        self.registry.register(_ReloadCollector(lambda: self._reloads()))

    def watch_backlog(self, guard: BacklogGuard) -> None:
        self._guard = guard

    def watch_context(self, stats: Callable[[], ContextStats | None]) -> None:
        self._context = stats

    def watch_delivery(self, stats: Callable[[], DeliveryStats | None]) -> None:
        self._delivery = stats

    def watch_reloads(self, counts: Callable[[], tuple[int, int]]) -> None:
        """(applied, refused) configuration reloads so far."""
        self._reloads = counts

    def render(self) -> bytes:
        return generate_latest(self.registry)
