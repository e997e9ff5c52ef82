"""Events per minute over the last hour: a ring per pixel, shared across replicas by Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from gateway.ingest.policy import SERVER
from gateway.web.per_minute import EventsPerMinute
from tests.conftest import OTHER_PIXEL, PIXEL, make_event

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
async def replicas(redis_url: str) -> AsyncIterator[Callable[[Clock], list[EventsPerMinute]]]:
    made: list[EventsPerMinute] = []

    def make(clock: Clock) -> list[EventsPerMinute]:
        made.extend(
            EventsPerMinute([PIXEL, OTHER_PIXEL], clock=clock, redis_url=redis_url)
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
