"""The dispatcher: claims events from the outbox and delivers them to TikTok in batches.

Ready events are grouped by destination into requests of up to `batch_size`, sent with
bounded concurrency over one keep-alive client; each classified answer decides its events'
fate: delivered → acknowledged; retry → backoff with jitter (a server hint is a floor), and
the circuit breaker counts it; permanent, or older than TikTok accepts → dead letter with a
reason. Stopping is graceful: no new claims, a grace period, the rest stay leased for the
next start; the finishing write of a request is shielded from cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from gateway.core.errors import OutboxUnavailable
from gateway.core.event import Destination
from gateway.delivery.client import EventsApiClient, Outcome, OutcomeKind
from gateway.delivery.isolation import Isolation, budget, named_position, split
from gateway.delivery.options import DeliveryOptions, DeliveryStats
from gateway.delivery.retry_policy import CircuitBreaker
from gateway.delivery.settlement import (
    DEAD_LETTERED,
    DELIVERED,
    RETRY,
    DeliveryObserver,
    NoObserver,
    Settlement,
)
from gateway.settings import Secret, Settings
from gateway.storage.outbox import ClaimedBatch, Outbox

log = logging.getLogger(__name__)
UNKNOWN_PIXEL_ATTEMPTS = 8
"""Attempts at events of a pixel this delivery does not know before they are dead-lettered
(the backoff between them, with its jitter: 0.5–1, 1–2 … 32–64 s at the defaults)."""


class Dispatcher:
    def __init__(
        self,
        outbox: Outbox,
        client: EventsApiClient,
        tokens: Mapping[str, Secret],
        *,
        options: DeliveryOptions | None = None,
        clock: Callable[[], float] = time.time,
        observer: DeliveryObserver | None = None,
    ) -> None:
        """`observer` is told every batch's fate (`delivery/settlement.py`)."""
        self._outbox = outbox
        self._observer = observer or NoObserver()
        self._client = client
        self._tokens = dict(tokens)
        self._options = options or DeliveryOptions()
        self._clock = clock
        self._breaker = CircuitBreaker(
            failure_threshold=self._options.breaker_failures,
            cooldown_seconds=self._options.breaker_cooldown_seconds,
            clock=clock,  # one clock for the whole dispatcher: tests drive it
        )
        self._semaphore = asyncio.Semaphore(self._options.concurrency)
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unanswered: set[asyncio.Task[None]] = set()
        """Tasks whose request is not answered yet: what the concurrency counts. A task
        that is settling (acknowledging, reporting) leaves its slot to the next batch."""
        self._changed = asyncio.Event()  # a request was answered, or a task ended
        self.stats = DeliveryStats()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        outbox: Outbox,
        client: EventsApiClient,
        *,
        observer: DeliveryObserver | None = None,
    ) -> Dispatcher:
        """The dispatcher `serve` runs, in its delivery process or in the serving one."""
        options = DeliveryOptions.from_settings(settings)
        return cls(outbox, client, _tokens(settings), options=options, observer=observer)

    async def reconfigure(self, settings: Settings) -> None:
        """Take a reloaded configuration's tokens: a batch sent from now on uses them (one
        reference swapped; a request under way keeps the token it was sent with). A pixel
        no longer configured has its events dead-lettered, to be replayed once it is back."""
        self._client.learn_secrets(settings.secrets())
        self._tokens = _tokens(settings)

    @property
    def running(self) -> bool:
        return self._runner is not None and not self._runner.done()

    def notify(self) -> None:
        """New events were added: stop waiting for the next poll."""
        self._wakeup.set()

    async def finished(self) -> None:
        """Until the claiming loop has ended (stopped, or died of a bug)."""
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(self._runner)

    async def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="dispatcher")

    async def stop(self) -> None:
        """Stop claiming, give in-flight requests the grace period, then cancel the rest."""
        if self._runner is None:
            return
        self._stopping.set()
        self._wakeup.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._runner
        self._runner = None
        pending = set(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self._options.shutdown_grace_seconds)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            log.info(
                "dispatcher stopped: %d request(s) finished in the grace period, %d cancelled "
                "(their events stay in the outbox)",
                len(pending) - len(late),
                len(late),
            )

    async def drain(self) -> None:
        """Deliver until no event is ready now (retries scheduled later are left): burst mode."""
        while True:
            batches = await self._claim()
            if not batches:
                return
            await asyncio.gather(*(self._deliver(batch) for batch in batches))

    async def _claim(self, slots: int | None = None) -> list[ClaimedBatch]:
        """Ready events as requests: one destination each, at most `batch_size` events."""
        size = self._options.batch_size
        limit = size * (slots or self._options.concurrency)
        return await self._outbox.claim_batches(limit, self._clock(), size)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early for new events or a stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)

    async def _run(self) -> None:
        options = self._options
        while not self._stopping.is_set():
            slots = self._breaker.allowed(options.concurrency) - len(self._unanswered)
            if slots <= 0 or len(self._tasks) >= 2 * options.concurrency:
                await self._wait_for_a_slot()
                continue
            self._wakeup.clear()
            try:
                batches = await self._claim(slots)
            except OutboxUnavailable as exc:  # the outbox is down: keep the loop, try later
                log.error("outbox claim failed: %s", exc)
                await self._sleep(options.poll_seconds)
                continue
            if not batches:
                await self._sleep(options.poll_seconds)
                if options.linger_seconds and not self._stopping.is_set():
                    await asyncio.sleep(options.linger_seconds)  # let a batch fill up
                continue
            for batch in batches:
                task = asyncio.create_task(self._deliver(batch))
                self._tasks.add(task)
                self._unanswered.add(task)
                task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._unanswered.discard(task)
        self._changed.set()

    def _answered(self) -> None:
        """This task's request was answered (and the breaker told): its slot is free."""
        task = asyncio.current_task()
        if task in self._unanswered:
            self._unanswered.discard(task)
            self._changed.set()

    async def _wait_for_a_slot(self) -> None:
        """Until a request is answered, a task ends, the breaker allows a probe, or a stop."""
        changed = asyncio.ensure_future(self._changed.wait())
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            timeout = None if self._tasks else self._breaker.seconds_until_probe()
            await asyncio.wait(
                {changed, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            changed.cancel()
            stop.cancel()
            self._changed.clear()

    async def _deliver(self, batch: ClaimedBatch) -> None:
        destination = batch.destination
        try:
            await self._deliver_batch(destination, batch)
        except asyncio.CancelledError:
            raise
        except OutboxUnavailable as exc:  # settling failed: the lease expires, it is sent again
            log.error("outbox unavailable while settling a batch: %s", exc)
        except Exception:  # never let one batch kill the dispatcher; its lease will expire
            log.exception("delivery to %s failed unexpectedly", destination.event_source_id)

    async def _deliver_batch(self, destination: Destination, batch: ClaimedBatch) -> None:
        now = self._clock()
        max_age = self._options.max_event_age_seconds
        if now - min(batch.event_times) > max_age:
            stale, batch = batch.parted(lambda c: now - c.event_time <= max_age)
            reason = f"older than {max_age // 86400} days, the oldest event TikTok accepts"
            await asyncio.shield(self._dead_letter(destination, stale, reason, None))
        if not batch:
            return
        token = self._tokens.get(destination.event_source_id)
        if token is None:
            await asyncio.shield(self._unknown_pixel(destination, batch))
            return
        await self._send(destination, batch, token, Isolation(budget(len(batch))))

    async def _send(
        self, destination: Destination, batch: ClaimedBatch, token: Secret, isolation: Isolation
    ) -> None:
        """Send one request and settle its events; a refused request of several events is
        taken apart (delivery/isolation.py) so only the events TikTok refuses are dead."""
        async with self._semaphore:
            outcome = await self._client.send_stored(destination, batch.data, token)
        if outcome.kind is OutcomeKind.RETRY:
            self._breaker.failure()
        else:
            self._breaker.success()  # delivered, or refused: TikTok answered, upstream is fine
        self._answered()  # told the breaker first: the next claim sees this answer
        self.stats.requests += 1
        request = self.stats.requests
        refused = outcome.kind is OutcomeKind.PERMANENT and not outcome.alert
        if refused and len(batch) > 1:
            dead, parts = split(batch.items(), named_position(outcome.message, len(batch)))
            if isolation.left >= len(parts):
                isolation.left -= len(parts)
                self.stats.isolation_requests += len(parts)
                if dead:
                    settled = ClaimedBatch.of(destination, dead)
                    await asyncio.shield(self._settle(destination, settled, outcome, request))
                for part in parts:
                    await self._send(
                        destination, ClaimedBatch.of(destination, part), token, isolation
                    )
                return
        await asyncio.shield(self._settle(destination, batch, outcome, request))

    async def _unknown_pixel(self, destination: Destination, batch: ClaimedBatch) -> None:
        """Events of a pixel this delivery does not know: retried a while, then dead.

        With replicas a reload reaches each one on its own, so one still on the old
        configuration may claim events of a new pixel: retried for UNKNOWN_PIXEL_ATTEMPTS
        attempts, they are sent by whichever replica knows the pixel by then; a pixel
        really removed is dead-lettered, to be replayed once it is back."""
        pixel = destination.event_source_id
        attempts = 1 + max(batch.attempts)
        if attempts >= UNKNOWN_PIXEL_ATTEMPTS:
            reason = f"pixel {pixel} is not configured (add it, then replay)"
            await self._dead_letter(destination, batch, reason, None)
            return
        reason = f"pixel {pixel} is not configured here (yet: a reload under way?)"
        delay = self._options.backoff.delay(attempts, None)
        retry_at = self._clock() + delay
        await self._outbox.retry(batch.ids, retry_at, reason)
        self.stats.retried += len(batch)
        log.warning(
            "pixel %s: %d event(s) will be retried in %.1fs (attempt %d): %s",
            pixel, len(batch), delay, attempts, reason,
            extra=_fields(pixel, len(batch), None, attempt=attempts),
        )  # fmt: skip
        self._tell(RETRY, destination, batch, None, message=reason, retry_at=retry_at)

    async def _settle(
        self, destination: Destination, batch: ClaimedBatch, outcome: Outcome, request: int
    ) -> None:
        ids = batch.ids
        pixel = destination.event_source_id
        retry_at = None
        if outcome.kind is OutcomeKind.DELIVERED:
            await self._outbox.ack(ids)
            self.stats.delivered += len(ids)
            if outcome.code != 0:
                log.warning(
                    "pixel %s: TikTok code %s: %s", pixel, outcome.code, outcome.message,
                    extra=_fields(pixel, len(ids), outcome.code),
                )  # fmt: skip
        elif outcome.kind is OutcomeKind.RETRY:
            attempts = 1 + max(batch.attempts)
            delay = self._options.backoff.delay(attempts, outcome.retry_after)
            reason = _reason(outcome)
            retry_at = self._clock() + delay
            await self._outbox.retry(ids, retry_at, reason)
            self.stats.retried += len(ids)
            log.warning(
                "pixel %s: %d event(s) will be retried in %.1fs (attempt %d): %s",
                pixel, len(ids), delay, attempts, reason,
                extra=_fields(pixel, len(ids), outcome.code, attempt=attempts),
            )  # fmt: skip
        else:
            await self._dead_letter(
                destination, batch, _reason(outcome), outcome.code, request, outcome.request_id
            )
            if outcome.alert:
                self.stats.token_refused += len(ids)
                log.error(
                    "pixel %s: the access token was refused (code %s): fix the token, then "
                    "run 'tiktok-gateway replay --pixel %s'",
                    pixel, outcome.code, pixel,
                    extra=_fields(pixel, len(ids), outcome.code),
                )  # fmt: skip
            return
        kind = DELIVERED if outcome.kind is OutcomeKind.DELIVERED else RETRY
        self._tell(
            kind,
            destination,
            batch,
            request,
            code=outcome.code,
            message=outcome.message,
            request_id=outcome.request_id,
            retry_at=retry_at,
        )

    async def _dead_letter(
        self,
        destination: Destination,
        batch: ClaimedBatch,
        reason: str,
        code: int | None,
        request: int | None = None,
        request_id: str | None = None,
    ) -> None:
        """Dead-letter with TikTok's reason, code and request id (support asks for it)."""
        await self._outbox.dead_letter(
            batch.ids, reason, code, self._clock(), request_id=request_id
        )
        self.stats.dead_lettered += len(batch)
        log.error(
            "pixel %s: %d event(s) dead-lettered: %s",
            destination.event_source_id, len(batch), reason,
            extra=_fields(destination.event_source_id, len(batch), code),
        )  # fmt: skip
        self._tell(
            DEAD_LETTERED,
            destination,
            batch,
            request,
            code=code,
            message=reason,
            request_id=request_id,
        )

    def _tell(
        self,
        kind: str,
        destination: Destination,
        batch: ClaimedBatch,
        request: int | None,
        **answer: Any,
    ) -> None:
        """Report a batch's fate (`answer`: Settlement's code, message, request_id, retry_at)."""
        events = tuple(zip(batch.events, batch.event_ids, strict=True))
        at = self._clock()
        self._observer.settled(
            Settlement(kind, destination.event_source_id, events, at, request, **answer)
        )


def _tokens(settings: Settings) -> dict[str, Secret]:
    return {pixel.id: pixel.access_token for pixel in settings.pixels}


def _reason(outcome: Outcome) -> str:
    if outcome.code is not None:
        return f"code {outcome.code}: {outcome.message}"
    if outcome.http_status is not None:
        return f"HTTP {outcome.http_status}: {outcome.message}"
    return outcome.message


def _fields(pixel: str, events: int, code: int | None, **more: Any) -> dict[str, Any]:
    """Structured fields of a delivery log line (keys of the JSON log object)."""
    return {"pixel": pixel, "event_count": events, "tiktok_code": code, **more}
