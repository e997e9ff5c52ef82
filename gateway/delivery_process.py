"""Delivery in its own process, so sending never competes with ingestion for the GIL.

Under load, claiming, encoding and posting batches took a quarter of the serving thread's
time (bench/beacon.py, profiled), and a backlog drained after an outage would slow every
beacon while it lasted. `serve` therefore runs the dispatcher in a child process
(`[delivery] separate_process`, on by default):

- the parent keeps the outbox for adding events; the child opens it beside the parent (SQLite:
  a second connection to the WAL file, without the owner's lock; Redis: its own consumer) and
  claims, sends and settles;
- the parent wakes the child through a pipe after storing events (one byte, coalesced per
  loop iteration);
- "stop" on that pipe stops the child gracefully (grace period); the pipe closing without
  it means the parent died, and the child exits at once: a restarted gateway releases the
  leases and sends those events again (same event_id, so TikTok deduplicates);
- counters come back through shared memory for /metrics;
- a child that dies is restarted with backoff; /readyz is 503 until it runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import astuple
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

from gateway.config import Settings
from gateway.dispatch import DeliveryOptions, DeliveryStats, Dispatcher
from gateway.outbox import open_outbox
from gateway.tiktok import EventsApiClient

log = logging.getLogger(__name__)
_WAKE, _STOP = b"w", b"s"
_READY = b"ready"
_START_TIMEOUT = 30.0
_STATS_EVERY = 0.2
_RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


class DeliveryProcess:
    """The parent's handle on the child: start, wake, watch, restart, stop."""

    def __init__(
        self, settings: Settings, on_restart: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """`on_restart` runs before a replacement child starts (the outbox releases leases)."""
        self._settings = settings
        self._on_restart = on_restart
        self._context = multiprocessing.get_context("spawn")  # no inherited loop or threads
        self._stats: Any = self._context.Array("q", len(astuple(DeliveryStats())), lock=False)
        self._process: multiprocessing.process.BaseProcess | None = None
        self._wake_writer: Connection | None = None
        self._wake_pending = False
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self.restarts = 0

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def stats(self) -> DeliveryStats:
        return DeliveryStats(*self._stats[:])

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Start the child and return once it has opened the outbox (raises if it cannot)."""
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="delivery-supervisor")

    async def _spawn(self) -> None:
        wake_reader, wake_writer = self._context.Pipe(duplex=False)
        ready_reader, ready_writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_child_main,
            args=(self._settings, wake_reader, ready_writer, self._stats),
            name="tiktok-gateway-delivery",
            daemon=True,
        )
        process.start()
        wake_reader.close()
        ready_writer.close()
        try:
            answered = await asyncio.to_thread(ready_reader.poll, _START_TIMEOUT)
            message = ready_reader.recv_bytes() if answered else b"no answer in time"
        except EOFError:
            message = b"exited while starting"
        finally:
            ready_reader.close()
        if message != _READY:
            wake_writer.close()
            await asyncio.to_thread(process.join, 5)
            if process.is_alive():
                process.kill()
            raise RuntimeError(f"delivery process failed to start: {message.decode()}")
        os.set_blocking(wake_writer.fileno(), False)
        self._process, self._wake_writer = process, wake_writer
        log.info("delivery process %s started", process.pid)

    def notify(self) -> None:
        """Events were stored: wake the child, once per loop iteration however many arrive."""
        if not self._wake_pending:
            self._wake_pending = True
            asyncio.get_running_loop().call_soon(self._wake)

    def _wake(self) -> None:
        self._wake_pending = False
        self._write(_WAKE)

    def _write(self, signal_byte: bytes) -> None:
        if self._wake_writer is None:
            return
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(self._wake_writer.fileno(), signal_byte)  # full pipe: a wake is pending

    async def _supervise(self) -> None:
        """Restart a child that died on its own; the outbox keeps its events meanwhile."""
        failures = 0
        while not self._stopping:
            process = self._process
            assert process is not None
            await asyncio.to_thread(process.join)
            if self._stopping:
                return
            delay = _RESTART_BACKOFF[min(failures, len(_RESTART_BACKOFF) - 1)]
            log.error(
                "delivery process %s exited with %s; restarting in %.0fs (events stay stored)",
                process.pid, process.exitcode, delay,
            )  # fmt: skip
            if self._wake_writer is not None:
                self._wake_writer.close()
                self._wake_writer = None
            await asyncio.sleep(delay)
            try:
                if self._on_restart is not None:
                    await self._on_restart()
                await self._spawn()
                self.restarts += 1
                failures = 0
            except Exception as exc:  # the outbox is down, or the child cannot start: later
                log.error("delivery process restart failed: %s", exc)
                failures += 1
                self._process = process  # joined already: the loop waits no time

    async def stop(self) -> None:
        """Ask the child to stop gracefully; wait for the grace period (plus margin), then kill."""
        self._stopping = True
        process = self._process
        if process is not None and process.is_alive():
            self._write(_STOP)
            grace = self._settings.delivery.shutdown_grace_seconds + 10.0
            await asyncio.to_thread(process.join, grace)
            if process.is_alive():
                log.error("delivery process %s did not stop in time: killed", process.pid)
                process.kill()
                await asyncio.to_thread(process.join, 5)
        if self._wake_writer is not None:
            self._wake_writer.close()
            self._wake_writer = None
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor


def _child_main(
    settings: Settings, wake: Connection, ready: Connection, stats: SynchronizedArray[int]
) -> None:
    """The child's entry point (a fresh interpreter: spawn)."""
    from gateway.logs import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the parent, which stops us
    configure_logging(settings.log_level, settings.secrets())
    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        runner = asyncio.run
    try:
        runner(_deliver_until_told(settings, wake, ready, stats))
    except Exception as exc:  # reported to the parent if it still waits for "ready"
        log.exception("delivery process failed")
        with contextlib.suppress(OSError):
            ready.send_bytes(f"{type(exc).__name__}: {exc}".encode())
        raise SystemExit(1) from None


async def _deliver_until_told(
    settings: Settings, wake: Connection, ready: Connection, stats: SynchronizedArray[int]
) -> None:
    outbox = open_outbox(settings.outbox, owner=False)
    client = EventsApiClient(
        settings.api_base,
        timeout=settings.api_timeout_seconds,
        max_connections=settings.delivery.concurrency,
    )
    tokens = {p.id: p.access_token for p in settings.pixels}
    await outbox.open()
    dispatcher = Dispatcher(outbox, client, tokens, options=DeliveryOptions.from_settings(settings))
    loop = asyncio.get_running_loop()
    told: asyncio.Future[bool] = loop.create_future()  # True: stop gracefully; False: at once

    def tell(graceful: bool) -> None:
        if not told.done():
            told.set_result(graceful)

    def on_signal() -> None:
        try:
            data = os.read(wake.fileno(), 4096)
        except BlockingIOError:
            return
        if not data or _STOP in data:
            loop.remove_reader(wake.fileno())
            tell(bool(data))
        else:
            dispatcher.notify()

    os.set_blocking(wake.fileno(), False)
    loop.add_reader(wake.fileno(), on_signal)
    loop.add_signal_handler(signal.SIGTERM, tell, True)
    await dispatcher.start()
    ready.send_bytes(_READY)
    ready.close()
    publisher = asyncio.create_task(_publish_stats(dispatcher, stats))
    try:
        graceful = await told
        if graceful:
            await dispatcher.stop()
        else:
            log.error(
                "the gateway process is gone: delivery stops now; the next gateway "
                "sends what was in flight again"
            )
    finally:
        publisher.cancel()
        stats[:] = list(astuple(dispatcher.stats))
        if told.done() and told.result():
            await client.aclose()
            await outbox.close()
    if not graceful:
        os._exit(1)  # skip the graceful teardown: a new gateway may be taking over


async def _publish_stats(dispatcher: Dispatcher, stats: SynchronizedArray[int]) -> None:
    while True:
        stats[:] = list(astuple(dispatcher.stats))
        await asyncio.sleep(_STATS_EVERY)
