"""Delivery in its own process, so sending never competes with ingestion for the GIL.

`serve` runs the dispatcher in a child (`[delivery] separate_process`, on by default) that
opens the outbox beside the parent and claims, sends and settles. The parent wakes it through
a pipe ("stop" stops it gracefully; the pipe closing stops it at once), counters come back
through shared memory and each batch's fate through a second pipe; a reload goes through a
third and is answered before new pixels or tokens are accepted. A dead child is restarted
with backoff (/readyz is 503 meanwhile). Why and how: docs/design/delivery-process.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import multiprocessing
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import astuple
from multiprocessing.connection import Connection
from typing import Any

from gateway.delivery.child import EXIT_TERMINATED, READY, STOP, WAKE, ChildEnds, child_main
from gateway.delivery.options import DeliveryStats
from gateway.delivery.settlement import DeliveryObserver, NoObserver, read_settlements
from gateway.settings import Settings

log = logging.getLogger(__name__)
_START_TIMEOUT = 30.0
_RECONFIGURE_TIMEOUT = 10.0
_RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
_HEALTHY_AFTER = 60.0  # a child that ran this long resets the backoff


class DeliveryProcess:
    """The parent's handle on the child: start, wake, watch, restart, stop.

    Every wait for the child goes through its sentinel on the event loop (no thread calls
    waitpid beside /readyz), and a child being started is known before it answers, so a
    stop during a restart stops that one too.
    """

    def __init__(
        self,
        settings: Settings,
        on_restart: Callable[[], Awaitable[None]] | None = None,
        *,
        observer: DeliveryObserver | None = None,
    ) -> None:
        """`on_restart` runs before a replacement child starts (the outbox releases leases);
        `observer` is told the settlements the child reports."""
        self._settings = settings
        self._on_restart = on_restart
        self._observer = observer or NoObserver()
        self._settlements: Connection | None = None
        self._context = multiprocessing.get_context("spawn")  # no inherited loop or threads
        self._stats: Any = self._context.Array("q", len(astuple(DeliveryStats())), lock=False)
        self._counted_before = DeliveryStats()  # what children that died had counted
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        """The Redis consumer every child of this gateway uses, so a restarted child takes
        back at once what a crashed one held."""
        self._process: multiprocessing.process.BaseProcess | None = None
        self._wake_writer: Connection | None = None
        self._control: Connection | None = None
        """Where a reloaded configuration goes to the running child, which answers."""
        self._reloading = asyncio.Lock()  # one message on the control pipe at a time
        self._sent = 0  # the number of the latest configuration sent to a child
        self._wake_pending = False
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self.restarts = 0

    @property
    def running(self) -> bool:
        return (
            self._wake_writer is not None
            and self._process is not None
            and (self._process.is_alive())
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def stats(self) -> DeliveryStats:
        """Counters since the gateway started, across restarts of the child."""
        before, now = astuple(self._counted_before), self._stats[:]
        return DeliveryStats(*(a + b for a, b in zip(before, now, strict=True)))

    async def start(self) -> None:
        """Start the child and return once it has opened the outbox (raises if it cannot)."""
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="delivery-supervisor")

    async def _spawn(self) -> None:
        wake_reader, wake_writer = self._context.Pipe(duplex=False)
        ready_reader, ready_writer = self._context.Pipe(duplex=False)
        settlements, settlement_writer = self._context.Pipe(duplex=False)
        control, child_control = self._context.Pipe(duplex=True)
        _widen(settlements)
        settings = self._settings
        ends = ChildEnds(
            settings,
            self._consumer,
            wake_reader,
            ready_writer,
            settlement_writer,
            child_control,
            self._stats,
        )
        process = self._context.Process(
            target=child_main, args=(ends,), name="tiktok-gateway-delivery", daemon=True
        )
        try:
            process.start()
        finally:
            wake_reader.close()
            ready_writer.close()
            settlement_writer.close()
            child_control.close()
        self._listen(settlements)
        self._process = process  # known before it answers: a stop meanwhile reaches it
        try:
            answered = await asyncio.to_thread(ready_reader.poll, _START_TIMEOUT)
            message = ready_reader.recv_bytes() if answered else b"no answer in time"
        except EOFError:
            message = b"exited while starting"
        except BaseException:  # cancelled by a stop: this child must not outlive it
            wake_writer.close()
            control.close()
            await _end(process, 0.0)
            raise
        finally:
            ready_reader.close()
        if message != READY:
            wake_writer.close()
            control.close()
            await _end(process, 5.0)
            raise RuntimeError(f"delivery process failed to start: {message.decode()}")
        os.set_blocking(wake_writer.fileno(), False)
        self._wake_writer = wake_writer
        self._control = control
        log.info("delivery process %s started", process.pid)
        if self._settings is not settings:  # reloaded while the child was starting
            await self._send_settings()

    async def reconfigure(self, settings: Settings) -> None:
        """Hand a reloaded configuration to the child; return once it applies it (or after
        a timeout: then it is logged). A child started later gets it at its start.

        Raises RuntimeError if the child answers that it could not apply it."""
        self._settings = settings
        await self._send_settings()

    async def _send_settings(self) -> None:
        """Send the latest configuration to the running child and wait for its answer.

        Under a lock: two senders (a reload, and a restarted child being brought up to
        date) would interleave the parts of a large message, and wait on the same pipe.
        Each message is numbered and the child answers with the number, so an answer that
        came after its reload timed out is read and dropped here, not taken as this one's.
        """
        async with self._reloading:
            control, settings = self._control, self._settings
            if control is None:  # none running: the next child starts with these
                return
            self._sent += 1
            sent = self._sent
            try:  # in a thread: a large rule set may not fit the pipe at once
                os.set_blocking(control.fileno(), True)  # see _answer
                await asyncio.to_thread(control.send, (sent, settings))
                error = await asyncio.wait_for(_answer(control, sent), _RECONFIGURE_TIMEOUT)
            except TimeoutError:
                log.error(
                    "delivery process %s did not confirm the reloaded configuration in %.0fs",
                    self.pid, _RECONFIGURE_TIMEOUT,
                )  # fmt: skip
                return
            except (EOFError, OSError, ValueError):  # it died: a new one starts with these
                return
        if error is not None:
            raise RuntimeError(
                f"delivery process {self.pid} could not apply the reloaded configuration: {error}"
            )

    def _listen(self, settlements: Connection) -> None:
        """Read the child's settlements as they arrive, until it closes its end."""
        self._stop_listening()
        loop = asyncio.get_running_loop()

        def readable() -> None:
            if not read_settlements(settlements, self._observer) and (
                self._settlements is settlements
            ):
                self._stop_listening()

        loop.add_reader(settlements.fileno(), readable)
        self._settlements = settlements

    def _stop_listening(self) -> None:
        if self._settlements is not None:
            with contextlib.suppress(OSError, ValueError):
                asyncio.get_running_loop().remove_reader(self._settlements.fileno())
            self._settlements.close()
            self._settlements = None

    def notify(self) -> None:
        """Events were stored: wake the child, once per loop iteration however many arrive."""
        if not self._wake_pending:
            self._wake_pending = True
            asyncio.get_running_loop().call_soon(self._wake)

    def _wake(self) -> None:
        self._wake_pending = False
        self._write(WAKE)

    def _write(self, signal_byte: bytes) -> bool:
        if self._wake_writer is None:
            return False
        try:
            os.write(self._wake_writer.fileno(), signal_byte)
        except OSError:  # full (a wake is pending anyway) or the child is gone
            return False
        return True

    async def _supervise(self) -> None:
        """Restart a child that died on its own; the outbox keeps its events meanwhile.

        The backoff grows while children die young; one that ran a while resets it.
        """
        failures = 0
        while not self._stopping:
            process = self._process
            assert process is not None
            started = time.monotonic()
            await _exited(process)
            if self._stopping:
                return
            if time.monotonic() - started > _HEALTHY_AFTER:
                failures = 0
            delay = _RESTART_BACKOFF[min(failures, len(_RESTART_BACKOFF) - 1)]
            failures += 1
            self._close_wake_writer()
            self._counted_before = self.stats
            self._stats[:] = [0] * len(self._stats)
            if process.exitcode == EXIT_TERMINATED:  # SIGTERM: to the group, the gateway stops
                log.info("delivery process %s stopped on SIGTERM", process.pid)
                await asyncio.sleep(delay)  # a stop of the gateway cancels this wait
                log.warning("delivery process stopped on SIGTERM alone; starting it again")
            else:
                log.log(
                    logging.WARNING if process.exitcode == 0 else logging.ERROR,
                    "delivery process %s exited with %s; restarting in %.0fs (events stay stored)",
                    process.pid, process.exitcode, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
            try:
                if self._on_restart is not None:
                    await self._on_restart()
                await self._spawn()
                self.restarts += 1
            except Exception as exc:  # the outbox is down, or the child cannot start: later
                log.error("delivery process restart failed: %s", exc)

    def _close_wake_writer(self) -> None:
        if self._wake_writer is not None:
            self._wake_writer.close()
            self._wake_writer = None
        if self._control is not None:
            self._control.close()
            self._control = None

    async def stop(self) -> None:
        """Ask the child to stop gracefully; wait for the grace period (plus margin), then kill."""
        self._stopping = True
        if self._supervisor is not None:  # a restart in progress ends its own child
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        process = self._process
        if process is not None and process.is_alive():
            if not self._write(STOP):
                process.terminate()  # the child stops gracefully on SIGTERM too
            await _end(process, self._settings.delivery.shutdown_grace_seconds + 10.0)
        if self._settlements is not None:  # what the child reported while it stopped
            read_settlements(self._settlements, self._observer)
        self._stop_listening()
        self._close_wake_writer()


_F_SETPIPE_SZ = 1031  # Linux; fcntl exposes it only from Python 3.12 on
_PIPE_BYTES = 1 << 20


def _widen(connection: Connection) -> None:
    """Give the settlement pipe 1 MiB instead of 64 KiB: a busy serving loop reads it a few
    times a second, and each read should take everything the child has sent meanwhile."""
    with contextlib.suppress(OSError):  # not Linux, or above pipe-max-size: the default
        fcntl.fcntl(connection.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)


async def _answer(control: Connection, sent: int) -> str | None:
    """The child's answer to configuration number `sent` (None: applied; else why not),
    dropping answers to earlier ones that came too late."""
    while True:
        await _readable(control.fileno())
        # uvloop's add_reader leaves the fd non-blocking: a read or a large send on it
        # could then stop mid-message, and the pipe would be out of step for good
        os.set_blocking(control.fileno(), True)
        answered, error = control.recv()
        if answered == sent:
            return error if isinstance(error, str) else None


async def _readable(fd: int) -> None:
    """Until `fd` can be read (data, or the other end closed)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _exited(process: multiprocessing.process.BaseProcess) -> None:
    """Until the process has exited (its sentinel fd becomes readable), then reap it."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    sentinel = process.sentinel

    def exited() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(sentinel, exited)
    try:
        await done
    finally:
        loop.remove_reader(sentinel)
    process.join()  # exited already: reaps it at once


async def _end(process: multiprocessing.process.BaseProcess, grace: float) -> None:
    """Wait up to `grace` seconds for the process to exit, then kill it; always reaped."""
    if not process.is_alive():
        process.join()
        return
    try:
        await asyncio.wait_for(_exited(process), grace)
    except TimeoutError:
        if grace:
            log.error("delivery process %s did not stop in time: killed", process.pid)
        process.kill()
        await _exited(process)
