"""The dispatcher against the real fake Events API over loopback, with a real SQLite outbox."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.delivery.client import EventsApiClient
from gateway.delivery.dispatcher import UNKNOWN_PIXEL_ATTEMPTS, Dispatcher
from gateway.delivery.options import DeliveryOptions
from gateway.delivery.retry_policy import Backoff
from gateway.fake_api import FakeEventsApi, Fault
from gateway.settings import Secret
from gateway.storage.outbox.sqlite import SqliteOutbox
from tests.conftest import OTHER_PIXEL, PIXEL, TOKEN, SettingsFactory, make_event

pytestmark = pytest.mark.anyio

FAST = DeliveryOptions(
    linger_seconds=0.0,
    poll_seconds=0.05,
    backoff=Backoff(initial_seconds=0.02, max_seconds=0.1),
    breaker_failures=100,
    breaker_cooldown_seconds=0.05,
    shutdown_grace_seconds=2.0,
)


class Harness:
    def __init__(self, outbox: SqliteOutbox, client: EventsApiClient, fake: FakeEventsApi) -> None:
        self.outbox, self.client, self.fake = outbox, client, fake

    def dispatcher(self, *, clock: Callable[[], float] = time.time, **options: Any) -> Dispatcher:
        opts = DeliveryOptions(**{**FAST.__dict__, **options})
        tokens = {PIXEL: Secret(TOKEN), OTHER_PIXEL: Secret(TOKEN)}
        return Dispatcher(self.outbox, self.client, tokens, options=opts, clock=clock)

    def batch_sizes(self) -> list[int]:
        return [len(r.body["data"]) for r in self.fake.requests]

    def delivered_ids(self) -> list[str]:
        return [e["event_id"] for e in self.fake.accepted_events()]

    async def wait_until(self, condition: Callable[[], bool], within: float = 15.0) -> None:
        deadline = time.monotonic() + within
        while not condition():
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.02)


@pytest.fixture
async def harness(tmp_path: Path, fake_api: FakeEventsApi) -> AsyncIterator[Harness]:
    outbox = SqliteOutbox(str(tmp_path / "outbox.sqlite3"))
    await outbox.open()
    async with EventsApiClient(fake_api.url, timeout=1.0) as client:
        yield Harness(outbox, client, fake_api)
    await outbox.close()


async def test_2500_events_make_three_requests(harness: Harness) -> None:
    await harness.outbox.add([make_event(i) for i in range(2500)])
    await harness.dispatcher().drain()
    assert sorted(harness.batch_sizes(), reverse=True) == [1000, 1000, 500]
    assert sorted(harness.delivered_ids()) == sorted(f"ev-{PIXEL}-{i}" for i in range(2500))


async def test_destinations_never_share_a_request(harness: Harness) -> None:
    events = [
        *(make_event(i) for i in range(5)),
        *(make_event(i, pixel=OTHER_PIXEL) for i in range(5, 10)),
        *(make_event(i, test_code="TEST1") for i in range(10, 15)),
        *(make_event(i, source="offline") for i in range(15, 20)),
    ]
    await harness.outbox.add(events)
    await harness.dispatcher().drain()
    keys = [
        (r.body["event_source"], r.body["event_source_id"], r.body.get("test_event_code"))
        for r in harness.fake.requests
    ]
    assert sorted(keys, key=str) == sorted(
        [
            ("web", PIXEL, None),
            ("web", OTHER_PIXEL, None),
            ("web", PIXEL, "TEST1"),
            ("offline", PIXEL, None),
        ],
        key=str,
    )
    assert harness.batch_sizes() == [5, 5, 5, 5]


async def test_transient_failures_then_recovery_deliver_everything(harness: Harness) -> None:
    for fault in (
        Fault(status=503, times=3),
        Fault(status=429, retry_after=0, times=3),
        Fault(code=40100, message="QPS limit", times=3),
        Fault(code=50000, message="internal", times=3),
    ):
        harness.fake.add_fault(fault)
    dispatcher = harness.dispatcher(batch_size=40)
    await dispatcher.start()
    sent = [make_event(i) for i in range(200)]
    for start in range(0, 200, 25):
        await harness.outbox.add(sent[start : start + 25])
        dispatcher.notify()
        await asyncio.sleep(0)  # let the dispatcher claim between adds
    await harness.wait_until(lambda: len(set(harness.delivered_ids())) == 200)
    await dispatcher.stop()
    failures = [r for r in harness.fake.requests if r.fault]
    assert len(failures) == 12
    for request in harness.fake.requests:  # no event twice in one batch
        ids = [e["event_id"] for e in request.body["data"]]
        assert len(ids) == len(set(ids))
    counts = await harness.outbox.counts(time.time())
    assert (counts.pending, counts.retrying, counts.in_flight, counts.dead) == (0, 0, 0, 0)
    assert dispatcher.stats.retried > 0


async def test_invalid_pixel_is_dead_lettered_while_others_flow_then_replayed(
    harness: Harness,
) -> None:
    harness.fake.add_fault(
        code=40002, message="Invalid value for event_source_id", pixel=OTHER_PIXEL, times=None
    )
    await harness.outbox.add(
        [make_event(i) for i in range(3)] + [make_event(i, pixel=OTHER_PIXEL) for i in range(3, 6)]
    )
    await harness.dispatcher().drain()
    assert sorted(harness.delivered_ids()) == [f"ev-{PIXEL}-{i}" for i in range(3)]
    dead = await harness.outbox.dead_letters()
    assert sorted(d.event.event_id for d in dead) == [f"ev-{OTHER_PIXEL}-{i}" for i in range(3, 6)]
    assert {(d.code, d.reason) for d in dead} == {
        (40002, "code 40002: Invalid value for event_source_id")
    }
    refused = {r.request_id for r in harness.fake.requests if r.code == 40002}
    assert {d.request_id for d in dead} <= refused and None not in refused  # support asks
    harness.fake.clear_faults()
    assert await harness.outbox.replay(pixel=OTHER_PIXEL) == 3
    await harness.dispatcher().drain()
    assert len(harness.delivered_ids()) == 6
    assert (await harness.outbox.counts(time.time())).dead == 0


async def test_revoked_token_dead_letters_and_alerts(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.fake.add_fault(code=40105, message="Access token is incorrect or has been revoked.")
    await harness.outbox.add([make_event(1)])
    with caplog.at_level(logging.ERROR):
        await harness.dispatcher().drain()
    [dead] = await harness.outbox.dead_letters()
    assert dead.code == 40105
    assert "replay --pixel" in caplog.text
    assert TOKEN not in caplog.text


async def test_events_too_old_are_dead_lettered_not_sent(harness: Harness) -> None:
    old = make_event(1, event_time=int(time.time()) - 8 * 86400)
    await harness.outbox.add([old, make_event(2)])
    await harness.dispatcher().drain()
    assert harness.delivered_ids() == [f"ev-{PIXEL}-2"]
    [dead] = await harness.outbox.dead_letters()
    assert "older than 7 days" in dead.reason


async def test_unconfigured_pixel_is_retried_a_while_then_dead_lettered(
    harness: Harness,
) -> None:
    await harness.outbox.add([make_event(1, pixel="CGONEPIXEL")])
    dispatcher = harness.dispatcher()
    await dispatcher.start()
    try:
        await harness.wait_until(lambda: dispatcher.stats.dead_lettered == 1)
    finally:
        await dispatcher.stop()
    [dead] = await harness.outbox.dead_letters()
    assert dead.reason == "pixel CGONEPIXEL is not configured (add it, then replay)"
    assert dead.attempts == UNKNOWN_PIXEL_ATTEMPTS and not harness.fake.requests
    assert dispatcher.stats.retried == UNKNOWN_PIXEL_ATTEMPTS - 1


async def test_a_pixel_a_reload_adds_here_later_is_delivered_not_dead(
    harness: Harness, make_settings: SettingsFactory
) -> None:
    """With replicas, one that has not reloaded yet may claim another's new pixel."""
    new_pixel = "CNEWPIXEL001"
    await harness.outbox.add([make_event(1, pixel=new_pixel)])
    dispatcher = harness.dispatcher()
    await dispatcher.start()
    try:
        await harness.wait_until(lambda: dispatcher.stats.retried >= 1)
        pixels = [{"id": p, "access_token": TOKEN} for p in (PIXEL, new_pixel)]
        await dispatcher.reconfigure(make_settings(pixels=pixels))
        await harness.wait_until(lambda: dispatcher.stats.delivered == 1)
    finally:
        await dispatcher.stop()
    assert harness.delivered_ids() == [f"ev-{new_pixel}-1"]
    assert dispatcher.stats.dead_lettered == 0


class FrozenClock:
    """Wall time that moves only when told; counts how often the dispatcher looked."""

    def __init__(self) -> None:
        self.now = time.time()
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


async def test_circuit_breaker_stops_hammering_a_dead_upstream(harness: Harness) -> None:
    harness.fake.add_fault(status=503, times=None)
    clock = FrozenClock()
    dispatcher = harness.dispatcher(
        batch_size=1, concurrency=1, breaker_failures=3, breaker_cooldown_seconds=0.2,
        backoff=Backoff(initial_seconds=0.001, max_seconds=0.001), clock=clock,
    )  # fmt: skip
    await harness.outbox.add([make_event(i) for i in range(50)])
    clock.now = time.time() + 1  # the events are due; the clock stands still from here
    await dispatcher.start()
    await harness.wait_until(lambda: len(harness.fake.requests) == 3)
    looked = clock.reads
    # the sentinel: the dispatcher checked the (open) breaker again and again meanwhile
    await harness.wait_until(lambda: clock.reads >= looked + 10)
    assert len(harness.fake.requests) == 3  # no fourth request while the breaker is open
    clock.now += 0.2  # the cool-down is over: exactly one probe, which fails
    await harness.wait_until(lambda: len(harness.fake.requests) == 4)
    looked = clock.reads
    await harness.wait_until(lambda: clock.reads >= looked + 10)
    assert len(harness.fake.requests) == 4  # open again, with a longer cool-down
    harness.fake.clear_faults()
    clock.now += 3600  # everything is due: retries, the next probe
    await harness.wait_until(lambda: len(set(harness.delivered_ids())) == 50)
    await dispatcher.stop()


async def test_stop_finishes_in_flight_requests_within_the_grace(harness: Harness) -> None:
    harness.fake.add_fault(delay=0.3)
    await harness.outbox.add([make_event(1)])
    dispatcher = harness.dispatcher(shutdown_grace_seconds=5.0)
    await dispatcher.start()
    await harness.wait_until(lambda: harness.fake.connections_opened > 0)
    await dispatcher.stop()  # the request is in flight: the grace lets it finish
    assert harness.delivered_ids() == [f"ev-{PIXEL}-1"]
    assert (await harness.outbox.counts(time.time())).in_flight == 0


async def test_stop_after_the_grace_leaves_events_in_the_outbox(harness: Harness) -> None:
    harness.fake.add_fault(delay=2.0)
    await harness.outbox.add([make_event(1)])
    dispatcher = harness.dispatcher(shutdown_grace_seconds=0.1)
    await dispatcher.start()
    await harness.wait_until(lambda: harness.fake.connections_opened > 0)
    await dispatcher.stop()
    counts = await harness.outbox.counts(time.time())
    assert counts.in_flight == 1  # still leased: the next start sends it again
