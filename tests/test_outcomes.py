"""Delivery outcomes reach the serving process: accepted, sent in which request, TikTok's
answer, retries and dead letters — from the delivery process and from an in-process one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from gateway.core.event import Destination, Event
from gateway.delivery.settlement import Settlement
from gateway.fake_api import FakeEventsApi
from gateway.ingest.policy import SERVER
from gateway.telemetry.recent import EventTrace, RecentEvents
from tests.conftest import PIXEL, GatewayServer, make_event
from tests.test_gateway import RecordingTransport

API_KEY = "server-key-0123456789"
PAGE = {"url": "https://shop.example/"}


def post(server: GatewayServer, *event_ids: str) -> None:
    events = [{"event": "Purchase", "event_id": i, "page": PAGE} for i in event_ids]
    response = httpx.post(
        f"{server.url}/v1/events",
        json={"events": events},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 202, response.text


def settled(server: GatewayServer, event_id: str, state: str, within: float = 15.0) -> EventTrace:
    """The event's trace once its latest step is `state` (delivered, retry, dead_lettered)."""
    assert server.gateway is not None
    deadline = time.monotonic() + within
    while True:
        trace = server.gateway.recent.find(PIXEL, "Purchase", event_id)
        if trace is not None and trace.state == state:
            return trace
        assert time.monotonic() < deadline, f"{event_id}: {trace}"
        time.sleep(0.02)


@pytest.fixture
def gateway_with(serve_gateway: Callable[..., GatewayServer]) -> Callable[..., GatewayServer]:
    def start(**toml: Any) -> GatewayServer:
        delivery = {"linger_ms": 0, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.1}
        return serve_gateway(server_api={"api_keys": [API_KEY]}, delivery=delivery, **toml)

    return start


def test_the_delivery_process_reports_each_event_with_tiktoks_answer(
    gateway_with: Callable[..., GatewayServer], fake_api: FakeEventsApi
) -> None:
    server = gateway_with()
    post(server, "o-1", "o-2")
    trace = settled(server, "o-1", "delivered")
    [step] = trace.steps
    assert (trace.source, step.code, step.message) == ("server", 0, "OK")
    assert trace.accepted is None  # kept only when asked (the console will)
    [request] = fake_api.requests
    assert step.request == 1 and step.request_id is not None and len(step.request_id) == 32
    assert settled(server, "o-2", "delivered").steps[0].request == 1  # the same request
    assert len(request.body["data"]) == 2


def test_retries_and_dead_letters_are_reported_from_the_delivery_process(
    gateway_with: Callable[..., GatewayServer], fake_api: FakeEventsApi
) -> None:
    server = gateway_with()
    fake_api.add_fault(status=503, times=1)
    post(server, "r-1")
    trace = settled(server, "r-1", "delivered")
    assert [s.outcome for s in trace.steps] == ["retry", "delivered"]
    assert trace.steps[0].retry_at is not None and "HTTP 503" in trace.steps[0].message
    fake_api.add_fault(code=40002, message="Invalid value for event_id", times=1)
    post(server, "d-1")
    dead = settled(server, "d-1", "dead_lettered")
    assert (dead.steps[-1].code, dead.steps[-1].message) == (
        40002,
        "code 40002: Invalid value for event_id",
    )


def test_in_process_delivery_reports_to_the_same_buffer(
    serve_gateway: Callable[..., GatewayServer],
) -> None:
    transport = RecordingTransport()
    server = serve_gateway(transport=transport, server_api={"api_keys": [API_KEY]})
    post(server, "i-1")
    step = settled(server, "i-1", "delivered").steps[0]
    assert (step.request, step.request_id) == (1, "r-1")


def test_the_buffer_is_bounded() -> None:
    recent = RecentEvents(capacity=3, clock=lambda: 100.0, keep_events=True)
    events = [make_event(i) for i in range(5)]
    recent.accepted(events, SERVER)
    assert [t.event_id for t in recent.latest()] == [e.event_id for e in reversed(events[2:])]
    settlement = Settlement("delivered", PIXEL, (("Purchase", events[4].event_id),), at=101.0)
    recent.settled(Settlement.from_json(orjson.loads(orjson.dumps(settlement.to_json()))))
    assert recent.find(PIXEL, "Purchase", events[0].event_id) is None  # evicted
    kept = recent.find(PIXEL, "Purchase", events[4].event_id)
    assert kept is not None and kept.accepted == events[4] and kept.state == "delivered"
    assert events[4].destination == Destination("web", PIXEL, None)


def delivered(*events: Event, at: float) -> Settlement:
    """A settlement as it comes over the pipe from the delivery process (JSON lists)."""
    pairs = [["Purchase", event.event_id] for event in events]
    return Settlement.from_json(orjson.loads(orjson.dumps(["delivered", PIXEL, pairs, at])))


def test_a_reader_gets_what_changed_since_its_cursor_in_the_order_it_changed() -> None:
    clock = iter(range(100, 10_000))
    recent = RecentEvents(capacity=50, clock=lambda: float(next(clock)), keep_events=True)
    first, second, third = make_event(1), make_event(2), make_event(3)
    recent.accepted([first, second], SERVER)  # at 100
    cursor = recent.cursor()
    assert recent.changed_since(cursor, 10) == (cursor, [])

    recent.settled(delivered(first, at=150.0))
    recent.accepted([third], SERVER)  # at 101: before the settlement
    cursor, traces = recent.changed_since(cursor, 10)
    assert [(t.event_id, t.state) for t in traces] == [
        (third.event_id, "accepted"),
        (first.event_id, "delivered"),
    ]
    assert recent.changed_since(cursor, 10) == (cursor, [])

    flood = [make_event(n) for n in range(10, 40)]
    recent.accepted(flood, SERVER)
    recent.settled(delivered(make_event(999), at=200.0))  # never here (or evicted): not shown
    cursor, traces = recent.changed_since(cursor, 5)
    assert [t.event_id for t in traces] == [e.event_id for e in flood[-5:]]


def test_a_reader_of_stored_events_skips_other_replicas_events() -> None:
    recent = RecentEvents(capacity=50)
    cursor = recent.cursor()
    recent.accepted([make_event(1)], SERVER)
    recent.accepted_elsewhere("replica-b", (PIXEL, "Purchase", "theirs"), 1.0, "server", None)
    recent.accepted([make_event(2)], SERVER)
    after, traces = recent.accepted_since(cursor, 10, here_only=True)
    assert [t.event_id for t in traces] == [make_event(1).event_id, make_event(2).event_id]
    assert [t.event_id for t in recent.accepted_since(cursor, 10)[1]][1] == "theirs"
    assert recent.accepted_since(after, 10) == (after, [])


def test_while_events_are_kept_no_step_falls_off_unread() -> None:
    """A page reads a tick at a time; between two reads more batches may settle than the
    buffer keeps unread. The steps of the events they name are not lost."""
    recent = RecentEvents(capacity=1000, keep_events=True)
    events = [make_event(n) for n in range(150)]
    recent.accepted(events, SERVER)
    for n, event in enumerate(events):
        recent.settled(delivered(event, at=float(n)))
    trace = recent.find(PIXEL, "Purchase", events[0].event_id)
    assert trace is not None and trace.state == "delivered"


@pytest.mark.anyio
async def test_the_channel_stays_bounded_when_the_parent_stops_reading() -> None:
    """A serving process that falls behind costs dropped observations, never memory."""
    import multiprocessing

    from gateway.delivery.options import DeliveryStats
    from gateway.delivery.settlement import SettlementChannel

    reader, writer = multiprocessing.Pipe(duplex=False)
    channel = SettlementChannel(writer, max_bytes=200_000)
    stats = DeliveryStats()
    channel.count_into(stats)
    channel.start()
    pairs = tuple(("Purchase", f"event-{i:06d}") for i in range(1000))
    for _ in range(200):  # ~6 MB of settlements, nobody reading
        channel.settled(Settlement("delivered", PIXEL, pairs, at=1.0))
    assert channel._bytes <= 200_000
    assert stats.outcomes_dropped > 150
    first = Settlement.from_json(orjson.loads(await asyncio.to_thread(reader.recv_bytes)))
    assert [tuple(pair) for pair in first.events] == list(pairs)  # what went through is whole
    reader.close()
    await channel.close()


def test_a_settlement_half_written_is_read_whole_from_a_non_blocking_end() -> None:
    """The event loop leaves the reading end non-blocking; a settlement the child has only
    partly written must be waited for, not taken for a closed pipe (the gateway then
    stopped listening for good, and the child's queue filled)."""
    import multiprocessing
    import os
    import struct
    import threading

    reader, writer = multiprocessing.Pipe(duplex=False)
    os.set_blocking(reader.fileno(), False)
    pairs = tuple(("Purchase", f"event-{i:06d}") for i in range(1000))
    payload = orjson.dumps(Settlement("delivered", PIXEL, pairs, at=1.0).to_json())
    os.write(writer.fileno(), struct.pack("!i", len(payload)) + payload[:1000])
    rest = threading.Timer(0.2, os.write, (writer.fileno(), payload[1000:]))
    rest.start()
    seen: list[Settlement] = []

    class Observer:
        def settled(self, settlement: Settlement) -> None:
            seen.append(settlement)

    from gateway.delivery.settlement import read_settlements

    try:
        assert read_settlements(reader, Observer())  # still open
        assert [tuple(pair) for pair in seen[0].events] == list(pairs)
        writer.send_bytes(payload)  # and the next one is read in step
        assert read_settlements(reader, Observer()) and len(seen) == 2
    finally:
        rest.join()
        reader.close()
        writer.close()


def test_a_flood_keeps_an_even_sample_and_readers_get_only_that() -> None:
    """At 4,000 events a second, with 400 a second wanted, every 10th event is kept (each
    kept one costs the serving process its memory), and only kept ones are reported."""
    now = [1000.0]
    recent = RecentEvents(capacity=5000, clock=lambda: now[0], keep_per_second=400)
    recent.keep_for("a page")
    cursor = recent.cursor()
    events = iter(make_event(n) for n in range(100_000))
    for _ in range(3):  # three quarter-second windows of 1,000 events, in batches of 10
        for _ in range(100):
            recent.accepted([next(events) for _ in range(10)], SERVER)
            now[0] += 0.0025
    assert recent.keep_every == 10
    kept = [t for t in recent.latest() if t.accepted is not None]
    assert 2 * 1000 // 10 <= len(kept) <= 1000 + 2 * 1000 // 10  # the first window keeps all
    cursor, traces = recent.changed_since(cursor, 50)
    assert len(traces) == 50 and all(t.accepted is not None for t in traces)
    newest_kept = [t.event_id for t in reversed(kept[:50])]
    assert [t.event_id for t in traces] == newest_kept

    recent.release("a page")  # nobody reads: nothing is kept
    recent.accepted([next(events)], SERVER)
    assert recent.latest(1)[0].accepted is None
    recent.keep_for("another page")  # a new page starts with every event until it knows
    assert recent.keep_every == 1
    recent.accepted([next(events)], SERVER)
    assert recent.latest(1)[0].accepted is not None


def test_a_step_of_an_event_from_before_the_page_is_reported_without_its_event() -> None:
    """Retries of events accepted before a page opened are news to it; only what a flood's
    sampling left out is not."""
    now = [1000.0]
    recent = RecentEvents(capacity=5000, clock=lambda: now[0], keep_per_second=4)
    earlier = make_event(1)
    recent.accepted([earlier], SERVER)
    recent.keep_for("a page")
    cursor = recent.cursor()
    flood = [make_event(n) for n in range(10, 40)]
    for start in (0, 10, 20):  # 20 events in the first 0.3 s, 4 a second wanted: 1 in 17
        recent.accepted(flood[start : start + 10], SERVER)
        now[0] += 0.15
    assert recent.keep_every == 17
    recent.settled(delivered(earlier, *flood, at=now[0]))
    cursor, traces = recent.changed_since(cursor, 100)
    reported = {t.event_id: t for t in traces}
    assert reported[earlier.event_id].state == "delivered"
    assert reported[earlier.event_id].accepted is None
    assert {e.event_id for e in flood[:20]} <= set(reported)  # the first window: all kept
    assert [e.event_id for e in flood[20:] if e.event_id in reported] == [flood[20].event_id]


class Flood:
    """A page's buffer on a clock the test moves, fed `rate` events a second."""

    def __init__(self, keep_per_second: float = 400) -> None:
        self.now = 1000.0
        self.sent = 0
        self.recent = RecentEvents(
            capacity=100_000, clock=lambda: self.now, keep_per_second=keep_per_second
        )
        self.recent.keep_for("a page")

    def send(self, rate: float, seconds: float, batch: int = 1) -> list[Event]:
        events = []
        for _ in range(round(rate * seconds / batch)):
            group = [make_event(self.sent + n) for n in range(batch)]
            self.sent += batch
            self.recent.accepted(group, SERVER)
            events += group
            self.now += batch / rate
        return events

    def kept(self, events: list[Event]) -> int:
        return sum(
            trace.accepted is not None
            for event in events
            if (trace := self.recent.find(PIXEL, "Purchase", event.event_id))
        )


def test_after_a_flood_a_trickle_is_kept_again_within_half_a_second() -> None:
    flood = Flood()
    flood.send(rate=40_000, seconds=0.5, batch=10)
    assert flood.recent.keep_every > 50
    trickle = flood.send(rate=10, seconds=3)
    assert flood.recent.keep_every == 1
    assert flood.kept(trickle) >= 25  # at most the first half second is still sampled


def test_bursts_are_sampled_like_a_steady_flood() -> None:
    flood = Flood()
    bursts = []
    for _ in range(10):  # 1,000 events at once every 0.3 s: 3,333 a second
        flood.now += 0.3
        bursts += flood.send(rate=1_000_000, seconds=0.001, batch=1000)
    assert flood.kept(bursts) < 2500  # about 400 a second, the first window all
    assert flood.recent.keep_every > 1


def test_other_replicas_events_do_not_make_a_quiet_replica_sample() -> None:
    flood = Flood()
    local = []
    for second in range(2):
        for n in range(4000):  # 4,000 a second stored by another replica, shared
            key = (PIXEL, "Purchase", f"theirs-{second}-{n}")
            flood.recent.accepted_elsewhere("replica-b", key, flood.now, "browser", None)
            if n % 400 == 0:  # and 10 a second here
                local += flood.send(rate=10_000, seconds=0.0001)
            flood.now += 1 / 4000
    assert flood.recent.keep_every == 1
    assert flood.kept(local) == len(local) == 20


def test_an_event_accepted_again_is_one_change_and_older_ones_are_not_news() -> None:
    recent = RecentEvents(capacity=50, keep_events=True)
    first, second, third = make_event(1), make_event(2), make_event(3)
    recent.accepted([first, second, third], SERVER)
    cursor = recent.cursor()
    recent.accepted([third], SERVER)  # the same event again (a retry, or pixel and server)
    recent.accepted([third], SERVER)
    cursor, traces = recent.changed_since(cursor, 10)
    assert [t.event_id for t in traces] == [third.event_id]
    assert recent.accepted_since(cursor, 10) == (cursor, [])


def test_a_page_opened_during_a_flood_gets_a_backlog_of_kept_events() -> None:
    flood = Flood()
    flood.send(rate=40_000, seconds=1.0, batch=10)
    backlog = flood.recent.latest(200, sampled=True)
    assert len(backlog) == 200 and all(trace.accepted is not None for trace in backlog)
    assert any(trace.accepted is None for trace in flood.recent.latest(200))
