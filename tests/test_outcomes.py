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

from gateway.core.event import Destination
from gateway.delivery.observe import EventTrace, RecentEvents, Settlement
from gateway.fake_api import FakeEventsApi
from gateway.ingest.policy import SERVER
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


def test_the_buffer_is_bounded_and_calls_its_listeners() -> None:
    recent = RecentEvents(capacity=3, clock=lambda: 100.0, keep_events=True)
    accepted: list[str] = []
    settled_ids: list[tuple[str, str]] = []
    recent.on_accept(lambda trace: accepted.append(trace.event_id))
    recent.on_settle(lambda trace: settled_ids.append((trace.event_id, trace.state)))
    events = [make_event(i) for i in range(5)]
    recent.accepted(events, SERVER)
    assert [t.event_id for t in recent.latest()] == [e.event_id for e in reversed(events[2:])]
    settlement = Settlement("delivered", PIXEL, (("Purchase", events[4].event_id),), at=101.0)
    recent.settled(Settlement.from_json(orjson.loads(orjson.dumps(settlement.to_json()))))
    assert accepted == [e.event_id for e in events]
    assert settled_ids == [(events[4].event_id, "delivered")]
    assert recent.find(PIXEL, "Purchase", events[0].event_id) is None  # evicted
    kept = recent.find(PIXEL, "Purchase", events[4].event_id)
    assert kept is not None and kept.accepted == events[4]
    assert events[4].destination == Destination("web", PIXEL, None)


@pytest.mark.anyio
async def test_the_channel_stays_bounded_when_the_parent_stops_reading() -> None:
    """A serving process that falls behind costs dropped observations, never memory."""
    import multiprocessing

    from gateway.delivery.observe import SettlementChannel
    from gateway.delivery.options import DeliveryStats

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
