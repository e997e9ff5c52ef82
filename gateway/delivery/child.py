"""The delivery process's own side: open the outbox beside the gateway, run a dispatcher,
and do what the gateway says through its pipes (process.py is the parent's side).

The wake pipe carries a byte per batch of stored events ("w"), or "s" to stop gracefully;
its closing without "s" means the gateway died, and delivery stops at once. The control pipe
carries a reloaded configuration, applied and answered with its number (and why not, if it
could not be). Counters go back through shared memory, every batch's fate through the
settlement pipe. Why: docs/design/delivery-process.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import astuple, dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

from gateway.core import heap
from gateway.delivery.client import EventsApiClient
from gateway.delivery.dispatcher import Dispatcher
from gateway.delivery.settlement import SettlementChannel
from gateway.settings import Settings
from gateway.storage.backend import open_backend

log = logging.getLogger(__name__)
EXIT_TERMINATED = 3
"""The child's exit status after a graceful stop on SIGTERM (not on its parent's word)."""
WAKE, STOP = b"w", b"s"
READY = b"ready"
_STATS_EVERY = 0.2


@dataclass(frozen=True)
class ChildEnds:
    """What a delivery child gets from its gateway (pickled by multiprocessing's spawn)."""

    settings: Settings
    consumer: str
    wake: Connection
    ready: Connection
    settlements: Connection
    control: Connection
    stats: SynchronizedArray[int]


def child_main(child: ChildEnds) -> None:
    """The child's entry point (a fresh interpreter: spawn)."""
    from gateway.privacy.logs import configure_logging

    settings, ready = child.settings, child.ready
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the parent, which stops us
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a hang-up sent to the group: the parent's
    configure_logging(settings.log_level, settings.secrets(), settings.log_format)
    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency everywhere but Windows
        runner = asyncio.run
    try:
        terminated = runner(_deliver_until_told(child))
    except Exception as exc:  # reported to the parent if it still waits for "ready"
        log.exception("delivery process failed")
        with contextlib.suppress(OSError):
            ready.send_bytes(f"{type(exc).__name__}: {exc}".encode())
        raise SystemExit(1) from None
    if terminated:  # the parent tells a SIGTERM sent to the whole group from a crash
        raise SystemExit(EXIT_TERMINATED)


async def _deliver_until_told(child: ChildEnds) -> bool:
    """Deliver until the parent (or SIGTERM) says stop; True when SIGTERM said it."""
    settings, wake, ready, stats = child.settings, child.wake, child.ready, child.stats
    backend = open_backend(settings.outbox, owner=False, consumer=child.consumer)
    outbox = backend.outbox
    client = EventsApiClient.from_settings(settings)
    await outbox.open()
    channel = SettlementChannel(child.settlements)
    channel.start()
    dispatcher = Dispatcher.from_settings(settings, outbox, client, observer=channel)
    channel.count_into(dispatcher.stats)
    heap.for_serving()  # built: what it delivers with is frozen (it delivers as fast as we store)
    told = _Told(wake, dispatcher)
    reloads = _Reloads(child.control, dispatcher, settings)
    loop = asyncio.get_running_loop()
    loop.add_reader(child.control.fileno(), reloads.readable)
    await dispatcher.start()
    ready.send_bytes(READY)
    ready.close()
    publisher = asyncio.create_task(_publish_stats(dispatcher, stats))
    giver = asyncio.create_task(_give_back_memory())
    dispatching = asyncio.create_task(dispatcher.finished())
    waiting: set[asyncio.Future[Any]] = {told.future, dispatching}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    publisher.cancel()
    giver.cancel()
    _share(dispatcher, stats)
    if not told.future.done():  # the dispatcher died: exit, and the gateway starts a new process
        log.error("the dispatcher stopped unexpectedly; the delivery process exits")
        os._exit(1)
    if not told.future.result():
        log.error(
            "the gateway process is gone: delivery stops now; the next gateway sends what "
            "was in flight again"
        )
        os._exit(1)  # skip the graceful teardown: a new gateway may be taking over
    loop.remove_reader(child.control.fileno())
    await reloads.finished()
    await dispatcher.stop()
    _share(dispatcher, stats)
    await channel.close()
    await client.aclose()
    await backend.close()
    return told.by_sigterm


class _Told:
    """What the gateway says through the wake pipe — wake up, stop gracefully, or (the pipe
    closing) stop at once — and SIGTERM, a graceful stop that `by_sigterm` remembers."""

    def __init__(self, wake: Connection, dispatcher: Dispatcher) -> None:
        self._loop = asyncio.get_running_loop()
        self.future: asyncio.Future[bool] = self._loop.create_future()
        """True: stop gracefully; False: at once."""
        self.by_sigterm = False
        self._wake = wake
        self._dispatcher = dispatcher
        os.set_blocking(wake.fileno(), False)
        self._loop.add_reader(wake.fileno(), self._readable)
        self._loop.add_signal_handler(signal.SIGTERM, self._sigterm)

    def _tell(self, graceful: bool) -> None:
        if not self.future.done():
            self.future.set_result(graceful)

    def _readable(self) -> None:
        try:
            data = os.read(self._wake.fileno(), 4096)
        except BlockingIOError:
            return
        if not data or STOP in data:
            self._loop.remove_reader(self._wake.fileno())
            self._tell(bool(data))
        else:
            self._dispatcher.notify()

    def _sigterm(self) -> None:
        self.by_sigterm = True
        self._tell(True)


class _Reloads:
    """The child's side of a reload: apply the configuration the parent sends, answer."""

    def __init__(self, control: Connection, dispatcher: Dispatcher, settings: Settings) -> None:
        self._control = control
        self._dispatcher = dispatcher
        self._secrets = settings.secrets()
        self._tasks: set[asyncio.Task[None]] = set()

    def readable(self) -> None:
        # blocking: uvloop's add_reader makes the fd non-blocking, and a large message is
        # still being written when its first bytes wake us (a read would fail mid-message)
        os.set_blocking(self._control.fileno(), True)
        try:
            number, settings = self._control.recv()
        except (EOFError, OSError):  # the parent is gone: the wake pipe says so too
            asyncio.get_running_loop().remove_reader(self._control.fileno())
            return
        task = asyncio.create_task(self._apply(number, settings))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply(self, number: int, settings: Settings) -> None:
        """Apply configuration `number` and answer (number, None), or (number, why not):
        the gateway waits for this answer, and must not wait out a timeout for a bug."""
        from gateway.privacy.logs import configure_logging

        error: str | None = None
        try:
            # the old tokens stay redacted too: a revoked token is still nobody's business
            self._secrets = list(dict.fromkeys([*self._secrets, *settings.secrets()]))
            configure_logging(settings.log_level, self._secrets, settings.log_format)
            await self._dispatcher.reconfigure(settings)
        except Exception as exc:
            log.exception("delivery process: the reloaded configuration could not be applied")
            error = f"{type(exc).__name__}: {exc}"
        else:
            count = len(settings.pixels)
            log.info("delivery process: %d pixel(s) and their tokens reloaded", count)
        with contextlib.suppress(OSError):
            self._control.send((number, error))

    async def finished(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks))


def _share(dispatcher: Dispatcher, stats: SynchronizedArray[int]) -> None:
    """Copy the dispatcher's counters where the gateway reads them (DeliveryProcess.stats)."""
    stats[:] = list(astuple(dispatcher.stats))


async def _give_back_memory() -> None:
    """Free pages back to the system now and then: flat memory through a long run."""
    while True:
        await asyncio.sleep(heap.GIVE_BACK_SECONDS)
        heap.give_back()


async def _publish_stats(dispatcher: Dispatcher, stats: SynchronizedArray[int]) -> None:
    while True:
        _share(dispatcher, stats)
        await asyncio.sleep(_STATS_EVERY)
