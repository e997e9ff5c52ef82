"""The `Gateway`: everything the gateway runs, built once from `Settings` and shared.

`serve` wraps it in the Starlette app, the commands use its parts, and the delivery process
builds its dispatcher the same way (`Dispatcher.from_settings`). It owns the order of
things: the outbox opens before delivery starts, and on stop delivery ends (grace period)
before the HTTP client and the storage backend close. No module-level singletons, no
untyped state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from gateway.core.event import Event
from gateway.delivery.client import EventsApiClient
from gateway.delivery.dispatcher import Dispatcher
from gateway.delivery.options import Delivery
from gateway.delivery.process import DeliveryProcess
from gateway.http.auth import Auth
from gateway.http.failed_auth import FailedAuthLimit
from gateway.http.rate_limit import RateLimits
from gateway.ingest.leads import lead_memory
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.policy import SourcePolicy
from gateway.settings import Settings
from gateway.settings.live import LiveSettings
from gateway.storage.backend import open_backend
from gateway.storage.outbox import Outbox
from gateway.storage.outbox.guard import MB, BacklogGuard, BacklogLimits
from gateway.telemetry.drops import RecentDrops
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.per_minute import EventsPerMinute
from gateway.telemetry.recent import RecentEvents
from gateway.telemetry.recovered import RecoveredConversions
from gateway.telemetry.replicas import ReplicaFeed
from gateway.telemetry.score_histogram import ScoreHistogram

log = logging.getLogger(__name__)
RECENT_EVENTS = 1000


class Gateway:
    """Settings, metrics, outbox, pipeline and delivery, wired once.

    Delivery runs in a child process (`[delivery] separate_process`), unless an HTTP
    transport or an outbox is injected (tests): those cannot cross into a child, so a
    dispatcher in this process delivers instead.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        outbox: Outbox | None = None,
        clock: Callable[[], float] = time.time,
        reload: Callable[[], Settings] | None = None,
        config_file: str | Path | None = None,
        limits_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`reload` reads the configuration again, for `live.reload()` (SIGHUP, or a change
        of `config_file` or of a `file:` secret); `limits_clock` is the rate limits' (a
        monotonic one: a step of the wall clock must not lock anyone out)."""
        self.settings = settings
        """The configuration the gateway started with; `live.current` is the one now."""
        self.live = LiveSettings(settings, load=reload, config_file=config_file)
        """The configuration now: parts that can be reloaded listen to it."""
        self.metrics = Metrics()
        self.backend = open_backend(settings.outbox, outbox=outbox)
        """The storage the URL names: it owns the outbox and every connection to it."""
        self.outbox = self.backend.outbox
        self.pipeline = Pipeline(settings, self.outbox, self.metrics, clock=clock)
        self.recent = RecentEvents(RECENT_EVENTS, clock=clock)
        """The latest events and what became of them: what the console reads."""
        self.drops = RecentDrops(RECENT_EVENTS, clock=clock)
        """The latest dropped and refused events, and why (the console's too)."""
        self.pipeline.on_drop(self.drops.dropped)
        self.client: EventsApiClient | None = None
        self.delivery = self._delivery(settings, transport, injected=outbox is not None)
        self._guards(settings, clock, limits_clock)
        self.leads = lead_memory(settings, self.backend, clock=clock)
        """Browser context by lead (ttclid, _ttp, IP, user agent) for backend events."""
        self.pipeline.on_accept(self.leads.accepted)
        self.metrics.watch_context(lambda: self.leads.store.stats)
        self.postback_log = self.backend.postback_log(settings.postbacks.log_size)
        """The last postbacks per source and what each became (`tiktok-gateway postbacks`)."""
        self.revoked_sessions = self.backend.revoked_sessions()
        """Console sessions ended by a logout, refused by every replica until they expire."""
        self._telemetry(settings, clock)
        self.pipeline.on_accept(self._wake_delivery)
        self.metrics.watch_delivery(lambda: self.delivery.stats)
        # delivery first: no event is accepted for a new pixel or token it does not know
        self.live.prepare(self.delivery.reconfigure)
        self.live.on_reload(self.pipeline.reconfigure)
        self.live.on_reload(lambda new: self.per_minute.track(p.id for p in new.pixels))
        self.live.on_reload(_warn)
        self.metrics.watch_reloads(lambda: (self.live.reloads, self.live.refused))
        self._started = False

    def _delivery(
        self, settings: Settings, transport: httpx.AsyncBaseTransport | None, *, injected: bool
    ) -> Delivery:
        """A child process, unless a transport or an outbox was injected (they cannot cross
        into a child): then a dispatcher in this process."""
        if settings.delivery.separate_process and transport is None and not injected:
            return DeliveryProcess(
                settings, on_restart=self.outbox.release_leases, observer=self.recent
            )
        self.client = EventsApiClient.from_settings(settings, transport=transport)
        return Dispatcher.from_settings(settings, self.outbox, self.client, observer=self.recent)

    def _guards(
        self, settings: Settings, clock: Callable[[], float], limits_clock: Callable[[], float]
    ) -> None:
        outbox_settings = settings.outbox
        self.guard = BacklogGuard(
            self.outbox,
            BacklogLimits(
                max_bytes=outbox_settings.max_backlog_mb * MB,
                max_age_seconds=outbox_settings.max_backlog_age_hours * 3600,
                min_free_bytes=outbox_settings.min_free_mb * MB,
            ),
            on_shed=self.metrics.shed.inc,
            clock=clock,
        )
        """Whether browser events are shed now, because the backlog is past a limit."""
        self.metrics.watch_backlog(self.guard)
        self.limits = RateLimits(
            settings.rate_limit,
            on_refused=lambda endpoint: self.metrics.rate_limited.labels(endpoint).inc(),
            redis=self.backend.shared_buckets(),
            clock=limits_clock,
        )
        """Per-client rate limits of the endpoints strangers reach."""
        self.failed_auth = FailedAuthLimit.of(
            settings.rate_limit,
            self.limits,
            on_refused=lambda: self.metrics.rate_limited.labels("failed_auth").inc(),
            on_failed=lambda endpoint: self.metrics.failed_auth.labels(endpoint).inc(),
            clock=limits_clock,
        )
        """Failed authentications per client on the endpoints that take keys: past a budget,
        a client is refused before its key is compared."""
        self.auth = Auth(self.live, self.failed_auth)
        """Every key, token and secret of the configuration now, compared in one place."""

    def _telemetry(self, settings: Settings, clock: Callable[[], float]) -> None:
        self.pipeline.on_accept(self.recent.accepted)
        self.replicas: ReplicaFeed | None = None
        """With Redis and a console: every replica's events on every replica's console."""
        feed = self.backend.console_feed() if settings.console.enabled else None
        if feed is not None:
            self.replicas = ReplicaFeed(feed, self.recent)
        self.pipeline.on_accept(ScoreHistogram(self.metrics.registry).accepted)
        self.recovered = RecoveredConversions(self.metrics.registry)
        """Recovered conversions: browser events whose pixel copy was blocked or absent."""
        self.pipeline.on_accept(self.recovered.accepted)
        console = settings.console.enabled
        self.per_minute = EventsPerMinute(
            [p.id for p in settings.pixels],
            clock=clock,
            redis=self.backend.shared_counters() if console else None,
        )
        """Events per minute over the last hour, per pixel (every replica's with Redis), for
        the console's chart: without a console nothing counts them, nothing writes Redis."""
        if console:
            self.pipeline.on_accept(self.per_minute.accepted)

    def _wake_delivery(self, events: Sequence[Event], policy: SourcePolicy) -> None:
        self.delivery.notify()

    @property
    def started(self) -> bool:
        return self._started

    async def start(self) -> None:
        """Open the outbox, then start delivery; raises when either cannot, with everything
        opened so far closed again (`OutboxUnavailable`: the outbox). Once started, a no-op:
        `serve` starts the gateway before uvicorn, whose lifespan then finds it started."""
        if self._started:
            return
        try:
            await self.outbox.open()
            await self.leads.store.open()
            await self.postback_log.open()
            if self.settings.console.enabled:
                await self.revoked_sessions.open()
            await self.delivery.start()
        except BaseException:
            await self.postback_log.close()
            await self.leads.store.close()
            await self.backend.close()
            raise
        self.guard.start()
        self.live.start(self.settings.watch_files_seconds)
        self.per_minute.start()
        if self.replicas is not None:
            self.replicas.start()
        self._started = True
        _warn(self.settings)
        log.info("gateway ready: %d pixel(s), outbox %r", len(self.settings.pixels), self.outbox)

    async def stop(self) -> None:
        """Stop delivery (grace period), then close the client and the storage. Idempotent."""
        self._started = False
        await self.live.stop()
        await self.guard.stop()
        if self.replicas is not None:
            await self.replicas.close()
        await self.per_minute.stop()
        await self.delivery.stop()
        if self.client is not None:
            await self.client.aclose()
        await self.postback_log.close()
        await self.leads.store.close()
        await self.backend.close()


def _warn(settings: Settings) -> None:
    for warning in settings.warnings():
        log.warning("configuration: %s", warning)
