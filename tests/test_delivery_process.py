"""The delivery child's life cycle, driven directly: start, crash, restart, stop."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.delivery.process import DeliveryProcess
from gateway.fake_api import FakeEventsApi
from gateway.outbox import open_outbox
from gateway.settings import load_settings
from tests.gateway_process import write_config

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
    store = open_outbox(settings.outbox)  # the gateway's side: it owns the file
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
        await store.close()
