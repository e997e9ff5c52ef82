"""Nothing acknowledged is lost: real gateway processes, `kill -9`, restarts, a real Redis.

Each test posts events with unique ids to a gateway in a child process while the fake
Events API (in this process, over loopback) is slow or failing, kills the gateway with
SIGKILL at a moment when events are stored but not yet delivered, restarts it, and then
checks that every event that got a 2xx reached the fake upstream.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from gateway.fake_api import FakeEventsApi, Fault
from tests.gateway_process import GatewayProcess, Sender, write_config


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def delivered_ids(fake: FakeEventsApi) -> list[str]:
    return [e["event_id"] for e in fake.accepted_events()]


@pytest.fixture
def processes() -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for process in started:
        process.stop()


def assert_nothing_lost(sender: Sender, fake: FakeEventsApi) -> None:
    delivered = delivered_ids(fake)
    missing = set(sender.acked) - set(delivered)
    assert not missing, f"{len(missing)} acknowledged events never arrived"
    assert set(delivered) <= set(sender.sent), "an event arrived that nobody sent"
    for request in fake.requests:  # a batch never carries the same event twice
        if request.code == 0:
            ids = [e["event_id"] for e in request.body["data"]]
            assert len(ids) == len(set(ids))


def kill_and_restart(
    tmp_path: Path, fake: FakeEventsApi, outbox_url: str, processes: list[GatewayProcess]
) -> Sender:
    config = write_config(tmp_path / "gateway.toml", api_base=fake.url, outbox_url=outbox_url)
    fake.add_fault(Fault(delay=0.2, times=None))  # upstream slower than the senders
    first = GatewayProcess(config, tmp_path / "gateway.log").start()
    processes.append(first)
    sender = Sender(first)
    sender.start()
    wait_for(lambda: len(sender.acked) >= 600 and len(delivered_ids(fake)) > 0, 30, "traffic")
    first.kill9()
    acked_at_kill, delivered_at_kill = len(sender.acked), len(set(delivered_ids(fake)))
    assert acked_at_kill > delivered_at_kill, "the kill must leave stored, undelivered events"
    second = GatewayProcess(config, tmp_path / "gateway.log", port=first.port).start()
    processes.append(second)
    wait_for(lambda: len(sender.acked) >= acked_at_kill + 100, 30, "traffic to the new gateway")
    sender.stop()
    fake.clear_faults()
    wait_for(lambda: set(sender.acked) <= set(delivered_ids(fake)), 60, "the backlog to drain")
    assert_nothing_lost(sender, fake)
    print(
        f"acked {len(sender.acked)}, acked at kill {acked_at_kill}, delivered at kill "
        f"{delivered_at_kill}, delivered {len(delivered_ids(fake))} (duplicates share event_id)"
    )
    return sender


def test_kill_9_loses_nothing_with_sqlite(
    tmp_path: Path, fake_api: FakeEventsApi, processes: list[GatewayProcess]
) -> None:
    kill_and_restart(tmp_path, fake_api, f"sqlite:///{tmp_path}/outbox.sqlite3", processes)


def test_kill_9_loses_nothing_with_redis(
    tmp_path: Path, fake_api: FakeEventsApi, redis_url: str, processes: list[GatewayProcess]
) -> None:
    kill_and_restart(tmp_path, fake_api, redis_url, processes)


def test_replica_takes_over_a_killed_replicas_batch(
    tmp_path: Path, fake_api: FakeEventsApi, redis_url: str, processes: list[GatewayProcess]
) -> None:
    config = write_config(tmp_path / "gateway.toml", api_base=fake_api.url, outbox_url=redis_url)
    fake_api.add_fault(Fault(delay=1.0, drop=True, times=None))  # every batch hangs, then fails
    replica_a = GatewayProcess(config, tmp_path / "a.log").start()
    replica_b = GatewayProcess(config, tmp_path / "b.log").start()
    processes.extend([replica_a, replica_b])
    sender = Sender(replica_a, prefix="a")
    sender.start()
    wait_for(lambda: len(sender.acked) >= 200, 30, "events accepted by replica A")
    sender.stop()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    consumers = lambda: {  # noqa: E731
        c["name"]: c["pending"]
        for c in client.xinfo_consumers("tiktok-gateway:stream", "dispatchers")
    }
    a_name = next(name for name in consumers() if f"-{replica_a.pid}-" in name)
    wait_for(lambda: consumers()[a_name] > 0, 10, "replica A to claim a batch")
    replica_a.kill9()  # mid-batch: its claimed events sit in its pending list
    held_by_a = [
        p["message_id"] for p in client.xpending_range("tiktok-gateway:stream", "dispatchers",
                                                       "-", "+", 10_000, consumername=a_name)
    ]  # fmt: skip
    assert held_by_a
    fake_api.clear_faults()
    wait_for(lambda: set(sender.acked) <= set(delivered_ids(fake_api)), 60, "replica B to deliver")
    assert_nothing_lost(sender, fake_api)
    assert consumers().get(a_name, 0) == 0  # replica B took A's pending events over
    client.close()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_killed_delivery_process_is_restarted_and_nothing_is_lost(
    tmp_path: Path,
    fake_api: FakeEventsApi,
    processes: list[GatewayProcess],
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    outbox = (
        f"sqlite:///{tmp_path}/outbox.sqlite3"
        if backend == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    config = write_config(  # leases far longer than the test: the restart must take them back
        tmp_path / "gateway.toml", api_base=fake_api.url, outbox_url=outbox, lease_seconds=600
    )
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    processes.append(gateway)
    sender = Sender(gateway)
    sender.start()
    wait_for(lambda: len(delivered_ids(fake_api)) > 0, 30, "a first delivery")
    fake_api.add_fault(Fault(delay=3.0, drop=True, times=None))  # batches hang, then fail
    wait_for(lambda: len(sender.acked) >= 300, 30, "traffic")
    wait_for(lambda: _in_flight(outbox) > 0, 10, "batches claimed and hanging in flight")
    wait_for(lambda: _delivered_metric(gateway) > 0, 10, "the first deliveries counted")
    counted_before = _delivered_metric(gateway)
    first_child = gateway.delivery_pid
    os.kill(first_child, signal.SIGKILL)  # mid-batch: its claimed events are left behind
    accepted_at_kill = len(fake_api.accepted_events())  # after the kill: none of its own since
    fake_api.clear_faults()
    wait_for(lambda: _other_child(gateway, first_child), 15, "a new delivery process")
    sender.stop()
    wait_for(lambda: set(sender.acked) <= set(delivered_ids(fake_api)), 60, "the backlog")
    assert_nothing_lost(sender, fake_api)
    assert "restarting" in gateway.log_path.read_text()
    assert httpx.get(f"{gateway.url}/readyz").status_code == 200
    # counters never go backwards: the new child's deliveries add to what the dead one had
    # published (a reset would leave the metric short of this by counted_before)
    by_new_child = len(fake_api.accepted_events()) - accepted_at_kill
    expected = counted_before + by_new_child
    wait_for(lambda: _delivered_metric(gateway) >= expected, 10, "the counters")
    assert counted_before > 0 and by_new_child > 0


def _in_flight(outbox_url: str) -> int:
    """Events claimed and not settled, read beside the running gateway (as operators do)."""
    from gateway.settings import OutboxSettings
    from gateway.storage.backend import open_backend

    async def count() -> int:
        backend = open_backend(OutboxSettings(url=outbox_url), owner=False)
        try:
            await backend.outbox.open()
            return (await backend.outbox.counts(time.time())).in_flight
        finally:
            await backend.close()

    return asyncio.run(count())


def _delivered_metric(gateway: GatewayProcess) -> float:
    metrics = httpx.get(gateway.metrics_url).text
    found = re.search(r"^tiktok_gateway_delivery_delivered_total (\S+)$", metrics, re.M)
    assert found, metrics
    return float(found.group(1))


def _other_child(gateway: GatewayProcess, old: int) -> bool:
    try:
        return gateway.delivery_pid != old
    except AssertionError:  # none running between the death and the restart
        return False


def test_a_graceful_stop_ends_the_delivery_process_and_counters_reach_metrics(
    tmp_path: Path, fake_api: FakeEventsApi, processes: list[GatewayProcess]
) -> None:
    outbox = f"sqlite:///{tmp_path}/outbox.sqlite3"
    config = write_config(tmp_path / "gateway.toml", api_base=fake_api.url, outbox_url=outbox)
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    processes.append(gateway)
    sender = Sender(gateway)
    sender.start()
    wait_for(lambda: len(sender.acked) >= 100, 30, "traffic")
    sender.stop()
    wait_for(lambda: set(sender.acked) <= set(delivered_ids(fake_api)), 30, "delivery")
    delivered = len(set(delivered_ids(fake_api)))
    wait_for(lambda: _delivered_metric(gateway) == delivered, 10, "the published counters")
    child = gateway.delivery_pid
    gateway.stop()
    assert gateway.process is not None and gateway.process.returncode in (0, -signal.SIGTERM)
    assert not os.path.exists(f"/proc/{child}"), "the delivery process outlived the gateway"
    assert "delivery process" not in gateway.log_path.read_text().split("Shutting down")[-1]
