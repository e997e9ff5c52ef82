"""Events per minute over the last hour: a ring per pixel, shared across replicas by Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.ingest.policy import SERVER
from gateway.runtime import Gateway
from gateway.telemetry.per_minute import EventsPerMinute
from tests.conftest import OTHER_PIXEL, PIXEL, BackendFactory, SettingsFactory, make_event
from tests.redis_proxy import RedisProxy
from tests.test_console_replicas import until

START = 1_732_300_020.0  # 20 s into a minute
MINUTES = 90  # the first 30 of them leave the hour


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def per_minute(minute: int) -> int:
    """How many events the test sends in its `minute`-th simulated minute (0-based)."""
    return 20 + minute % 17


def send_the_hours(counters: list[EventsPerMinute], clock: Clock) -> int:
    """90 simulated minutes of events for PIXEL, spread over the minute's seconds and dealt
    to the counters in turn (replicas), one a minute for OTHER_PIXEL; returns the count."""
    sent = 0
    for minute in range(MINUTES):
        for n in range(per_minute(minute)):
            clock.now = START + minute * 60 + (n * 37) % 40  # all within that clock minute
            counters[n % len(counters)].accepted([make_event(sent)], SERVER)
            sent += 1
        counters[0].accepted([make_event(sent, pixel=OTHER_PIXEL)], SERVER)
    return sent


def expected_hour() -> list[int]:
    return [per_minute(minute) for minute in range(MINUTES - 60, MINUTES)]


def test_two_thousand_events_over_ninety_minutes_count_the_last_hour() -> None:
    clock = Clock()
    counter = EventsPerMinute([PIXEL, OTHER_PIXEL], clock=clock)
    assert send_the_hours([counter], clock) > 2000
    shown = counter.local()
    assert shown[PIXEL] == expected_hour()
    assert shown[OTHER_PIXEL] == [1] * 60
    clock.now += 60 * 10  # ten quiet minutes: the chart moves on
    assert counter.local()[PIXEL] == expected_hour()[10:] + [0] * 10
    clock.now += 3600
    assert counter.local()[PIXEL] == [0] * 60


def test_an_unknown_pixel_is_not_counted() -> None:
    counter = EventsPerMinute([PIXEL], clock=Clock())
    counter.accepted([make_event(1, pixel=OTHER_PIXEL), make_event(2)], SERVER)
    assert counter.local() == {PIXEL: [0] * 59 + [1]}


def test_a_pixel_added_by_a_reload_is_counted_and_the_others_keep_their_hour() -> None:
    counter = EventsPerMinute([PIXEL], clock=Clock())
    counter.accepted([make_event(1)], SERVER)
    counter.track([PIXEL, OTHER_PIXEL])
    counter.accepted([make_event(2, pixel=OTHER_PIXEL), make_event(3)], SERVER)
    assert counter.local() == {PIXEL: [0] * 59 + [2], OTHER_PIXEL: [0] * 59 + [1]}
    counter.track([OTHER_PIXEL])  # removed: no longer shown
    assert counter.local() == {OTHER_PIXEL: [0] * 59 + [1]}


@pytest.fixture
async def replicas(
    redis_url: str, make_backend: BackendFactory
) -> AsyncIterator[Callable[[Clock], list[EventsPerMinute]]]:
    made: list[EventsPerMinute] = []

    def make(clock: Clock) -> list[EventsPerMinute]:
        made.extend(
            EventsPerMinute(
                [PIXEL, OTHER_PIXEL], clock=clock, redis=make_backend(redis_url).shared_counters()
            )
            for _ in range(2)
        )
        return made[-2:]

    yield make
    for counter in made:
        await counter.stop()


@pytest.mark.anyio
async def test_replicas_on_one_redis_show_the_sum(
    replicas: Callable[[Clock], list[EventsPerMinute]],
) -> None:
    clock = Clock()
    a, b = replicas(clock)
    total = send_the_hours([a, b], clock)
    assert total > 2000
    # each replica alone knows its own half, before anything is shared
    assert sum(a.local()[PIXEL]) + sum(b.local()[PIXEL]) == sum(expected_hour())
    assert (await b.per_minute())[PIXEL] != expected_hour()
    await a.flush()
    await b.flush()
    for replica in (a, b):
        shown = await replica.per_minute()
        assert shown[PIXEL] == expected_hour()
        assert shown[OTHER_PIXEL] == [1] * 60
    # what a replica counted since its last flush is in its own figures at once …
    a.accepted([make_event(10_000)], SERVER)
    assert (await a.per_minute())[PIXEL][-1] == expected_hour()[-1] + 1
    assert (await b.per_minute())[PIXEL][-1] == expected_hour()[-1]
    # … and in the other's after the next flush, counted once
    await a.flush()
    await a.flush()
    assert (await b.per_minute())[PIXEL][-1] == expected_hour()[-1] + 1
    assert (await a.per_minute())[PIXEL][-1] == expected_hour()[-1] + 1


@pytest.mark.anyio
async def test_a_redis_outage_is_logged_once_not_at_every_flush_and_read(
    redis_url: str, caplog: pytest.LogCaptureFixture, make_backend: BackendFactory
) -> None:
    proxy = RedisProxy(redis_url)
    shared = make_backend(proxy.url).shared_counters()
    counter = EventsPerMinute([PIXEL], clock=Clock(), redis=shared)
    try:
        proxy.down()
        for n in range(5):
            counter.accepted([make_event(n)], SERVER)
            await counter.flush()
            assert (await counter.per_minute())[PIXEL][-1] == n + 1  # this replica's own
        assert len(warnings(caplog)) == 2  # one for the flushes, one for the reads
        proxy.up()
        await counter.flush()
        assert (await counter.per_minute())[PIXEL][-1] == 5  # shared once, after all
        proxy.down()  # a new outage is said again
        counter.accepted([make_event(5)], SERVER)
        await counter.flush()
        await counter.flush()
        assert len(warnings(caplog)) == 3
    finally:
        await counter.stop()
        proxy.close()


@pytest.mark.anyio
async def test_a_flush_whose_answer_was_lost_is_not_counted_twice(
    redis_url: str, make_backend: BackendFactory
) -> None:
    """Redis applied the flush but the answer never came (a timeout): the next flush writes
    the same counts again, and every replica shows them once."""
    proxy = RedisProxy(redis_url)
    clock = Clock()
    writer = EventsPerMinute([PIXEL], clock=clock, redis=make_backend(proxy.url).shared_counters())
    reader = EventsPerMinute([PIXEL], clock=clock, redis=make_backend(redis_url).shared_counters())
    try:
        writer.accepted([make_event(0)], SERVER)
        await writer.flush()  # connected (the answer to SELECT is not what gets lost)
        for n in range(1, 3):
            writer.accepted([make_event(n)], SERVER)
        proxy.mute()
        await writer.flush()  # reaches Redis; the client gives up waiting for the answer
        assert (await reader.per_minute())[PIXEL][-1] == 3
        proxy.mute(False)
        writer.accepted([make_event(3)], SERVER)
        await writer.flush()
        assert (await reader.per_minute())[PIXEL][-1] == 4
        assert (await writer.per_minute())[PIXEL][-1] == 4
    finally:
        await writer.stop()
        await reader.stop()
        proxy.close()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gateway.telemetry.per_minute"]


@pytest.mark.anyio
@pytest.mark.parametrize("console", [True, False])
async def test_without_a_console_nothing_counts_and_nothing_reaches_redis(
    make_settings: SettingsFactory, redis_url: str, console: bool
) -> None:
    """The counts are the console's chart: with it they are shared at the last flush (on
    stop), the sentinel; without it there is no flush to make."""
    import redis.asyncio

    settings = make_settings(
        outbox={"url": redis_url},
        delivery={"separate_process": False},
        console={"admin_password": "a-console-password"} if console else {},
    )
    gateway = Gateway(settings)
    await gateway.start()
    try:
        # not stopped in the middle of the backlog guard's first reading: a cancel redis-py
        # turns into an error there is swallowed, and the stop hangs (a separate defect)
        await until(lambda: gateway.guard.backlog is not None, "no backlog reading")
        await gateway.pipeline.store_parsed([make_event(1)], SERVER, checkpoint="chunk-1")
        assert gateway.per_minute.shared is console
        assert sum(gateway.per_minute.local()[PIXEL]) == (1 if console else 0)
    finally:
        await gateway.stop()
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        written = [key async for key in client.scan_iter(match="*per-minute*")]
    finally:
        await client.aclose()
    assert bool(written) is console


@pytest.mark.anyio
async def test_stop_returns_even_when_a_flush_swallows_its_cancel(
    redis_url: str, make_backend: BackendFactory
) -> None:
    """redis-py can turn the cancel of a command in flight into a connection error, which a
    flush counts as an outage: stopping must not wait for a cancel that was lost."""
    shared = make_backend(redis_url).shared_counters()
    counter = EventsPerMinute([PIXEL], clock=Clock(), redis=shared, flush_seconds=0.01)
    flushing = asyncio.Event()
    flushes = 0

    async def swallowing_flush() -> None:
        nonlocal flushes
        flushes += 1
        if flushes == 1:  # the task's flush in flight swallows the cancel; later ones are quick
            flushing.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    counter.flush = swallowing_flush  # type: ignore[method-assign]
    counter.start()
    await asyncio.wait_for(flushing.wait(), 5)
    stopping = asyncio.create_task(counter.stop())
    done, _ = await asyncio.wait({stopping}, timeout=3)
    if not done:  # (cancelling stop() frees the task, which is why wait_for would pass)
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopping
    assert done, "stop() waited for a cancel that was lost"


@pytest.mark.anyio
async def test_a_pixel_removed_and_put_back_keeps_its_hour(
    redis_url: str, make_backend: BackendFactory
) -> None:
    clock = Clock()
    writer = EventsPerMinute([PIXEL], clock=clock, redis=make_backend(redis_url).shared_counters())
    reader = EventsPerMinute([PIXEL], clock=clock, redis=make_backend(redis_url).shared_counters())
    try:
        for n in range(50):
            writer.accepted([make_event(n)], SERVER)
        await writer.flush()
        writer.track([OTHER_PIXEL])  # a reload removed it …
        writer.track([PIXEL, OTHER_PIXEL])  # … and the next one put it back
        writer.accepted([make_event(50)], SERVER)
        await writer.flush()
        assert (await reader.per_minute())[PIXEL][-1] == 51
        assert (await writer.per_minute())[PIXEL][-1] == 51
    finally:
        await writer.stop()
        await reader.stop()
