"""The delivery child's life cycle, driven directly: start, crash, restart, stop."""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.delivery import process
from gateway.delivery.child import _Reloads
from gateway.delivery.process import DeliveryProcess, _readable
from gateway.fake_api import FakeEventsApi
from gateway.privacy import logs
from gateway.settings import Settings, load_settings
from gateway.storage.backend import open_backend
from tests.conftest import wait_until
from tests.gateway_process import GatewayProcess, write_config

pytestmark = pytest.mark.anyio


async def _until(condition: Callable[[], bool], within: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("stop_after", [0.2, 1.05, 1.4])  # the first restart waits 1 s
async def test_a_stop_while_a_crashed_child_is_restarted_leaves_no_process_behind(
    tmp_path: Path, fake_api: FakeEventsApi, stop_after: float
) -> None:
    outbox_url = f"sqlite:///{tmp_path}/outbox.sqlite3"
    config = write_config(tmp_path / "gateway.toml", api_base=fake_api.url, outbox_url=outbox_url)
    settings = load_settings(config, {})
    backend = open_backend(settings.outbox)  # the gateway's side: it owns the file
    store = backend.outbox
    await store.open()
    delivery = DeliveryProcess(settings, on_restart=store.release_leases)
    try:
        await delivery.start()
        assert delivery.running
        first = delivery.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await _until(lambda: not delivery.running)  # the gateway noticed the death
        await asyncio.sleep(stop_after)  # before, during or after the replacement starts
        if stop_after > 1.2:  # past the 1 s restart delay: a new child runs, or is starting
            await _until(lambda: delivery.running)
            assert delivery.pid != first
        await asyncio.wait_for(delivery.stop(), 30)
        assert multiprocessing.active_children() == []
        assert not delivery.running
    finally:
        await backend.close()


@pytest.fixture
def settings(tmp_path: Path, fake_api: FakeEventsApi) -> Settings:
    outbox_url = f"sqlite:///{tmp_path}/outbox.sqlite3"
    config = write_config(tmp_path / "gateway.toml", api_base=fake_api.url, outbox_url=outbox_url)
    return load_settings(config, {})


def _many_pixels(settings: Settings, reload: int) -> Settings:
    """A configuration of 8,000 pixels (400 KiB pickled: more than a socket buffer holds)."""
    pixel = settings.pixels[0]
    more = [dataclasses.replace(pixel, id=f"C{reload:03d}PIXEL{n:05d}") for n in range(8000)]
    return dataclasses.replace(settings, pixels=(pixel, *more))


@pytest.mark.parametrize("anyio_backend", [("asyncio", {"use_uvloop": True})])  # as `serve`
async def test_reloads_sent_at_once_reach_the_child_one_by_one_and_are_each_confirmed(
    settings: Settings, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """A restarted child brought up to date while reloads arrive: the messages are large
    (several writes each), and must not interleave on the pipe, nor be read in part by
    either side (uvloop's add_reader makes a fd non-blocking), nor their answers be taken
    for each other's."""
    backend = open_backend(settings.outbox)
    store = backend.outbox
    await store.open()
    delivery = DeliveryProcess(settings, on_restart=store.release_leases)
    try:
        await delivery.start()
        child = delivery.pid
        reloads = [delivery.reconfigure(_many_pixels(settings, n)) for n in range(6)]
        await asyncio.wait_for(asyncio.gather(*reloads), 30)
        assert "did not confirm" not in caplog.text
        applied = capfd.readouterr().err.count("delivery process: 8001 pixel(s) and their tokens")
        assert applied == len(reloads)  # the child logs that before it answers
        assert delivery.pid == child and delivery.running and delivery.restarts == 0
    finally:
        await delivery.stop()
        await backend.close()


class _Child:
    """The child's end of the control pipe, answered by the test."""

    def __init__(self, delivery: DeliveryProcess) -> None:
        parent, self.end = multiprocessing.Pipe(duplex=True)
        delivery._control = parent

    def received(self) -> int:
        number, _ = self.end.recv()
        assert isinstance(number, int)
        return number

    def answer(self, number: int, error: str | None = None) -> None:
        self.end.send((number, error))


async def test_an_answer_too_late_for_its_reload_is_not_taken_for_the_next_ones(
    settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "_RECONFIGURE_TIMEOUT", 0.3)
    delivery = DeliveryProcess(settings)
    child = _Child(delivery)
    await delivery.reconfigure(settings)  # the child is slow: the gateway stops waiting
    assert caplog.text.count("did not confirm") == 1
    child.answer(child.received())  # …and answers late

    # the next reload is not confirmed by that late answer: it waits for its own
    await delivery.reconfigure(settings)
    assert caplog.text.count("did not confirm") == 2
    number = child.received()

    answering = asyncio.create_task(asyncio.to_thread(lambda: child.answer(child.received())))
    child.answer(number)  # late again, then the third one's own answer
    await delivery.reconfigure(settings)
    await answering
    assert caplog.text.count("did not confirm") == 2


async def test_a_child_that_cannot_apply_a_reload_says_why_at_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's side (`_Reloads`) answers with the error; the gateway raises it, so
    the reload is not applied in the serving process either (settings/live.py logs it)."""

    class Broken:
        async def reconfigure(self, settings: Settings) -> None:
            raise ValueError("a bug")

    monkeypatch.setattr(logs, "configure_logging", lambda *args, **kwargs: None)
    parent, end = multiprocessing.Pipe(duplex=True)
    reloads = _Reloads(end, Broken(), settings)  # type: ignore[arg-type]
    delivery = DeliveryProcess(settings)
    delivery._control = parent

    async def child() -> None:
        await _readable(end.fileno())
        reloads.readable()
        await reloads.finished()

    answering = asyncio.create_task(child())
    with pytest.raises(RuntimeError, match=r"could not apply .*: ValueError: a bug"):
        await asyncio.wait_for(delivery.reconfigure(settings), 5)  # not the 10 s timeout
    await answering


def _serve(tmp_path: Path, fake_api: FakeEventsApi) -> GatewayProcess:
    config = write_config(
        tmp_path / "gateway.toml",
        api_base=fake_api.url,
        outbox_url=f"sqlite:///{tmp_path / 'outbox.sqlite3'}",
    )
    return GatewayProcess(config, tmp_path / "gateway.log").start()


def test_sigterm_to_the_whole_group_stops_quietly(tmp_path: Path, fake_api: FakeEventsApi) -> None:
    """As systemd or `timeout` send it: the child and the gateway both get SIGTERM, the child
    first; that is a stop, not a crash to restart (issue 23)."""
    gateway = _serve(tmp_path, fake_api)
    os.kill(gateway.delivery_pid, signal.SIGTERM)
    os.kill(gateway.pid, signal.SIGTERM)
    assert gateway.process is not None
    assert gateway.process.wait(20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    log = (tmp_path / "gateway.log").read_text()
    assert "stopped on SIGTERM" in log  # the sentinel: the child's stop was seen
    assert "restarting" not in log and "starting it again" not in log, log


def test_sigterm_to_the_child_alone_starts_it_again(
    tmp_path: Path, fake_api: FakeEventsApi
) -> None:
    gateway = _serve(tmp_path, fake_api)
    try:
        first = gateway.delivery_pid
        os.kill(first, signal.SIGTERM)
        wait_until(
            lambda: "starting it again" in (tmp_path / "gateway.log").read_text(), "no restart"
        )
        wait_until(lambda: _delivery_pid_or_none(gateway) not in (None, first), "no new child")
    finally:
        gateway.stop()


def _delivery_pid_or_none(gateway: GatewayProcess) -> int | None:
    try:
        return gateway.delivery_pid
    except (AssertionError, OSError):
        return None
