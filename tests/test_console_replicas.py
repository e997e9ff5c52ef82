"""With Redis, the console of any replica shows every replica's events and TikTok's answers.

Two replicas' console feeds on one real Redis (each with its own recent buffer, as two
gateway processes have), then two served gateways on one Redis outbox, read over HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.delivery.observe import DELIVERED, RecentEvents, Settlement
from gateway.ingest.policy import SERVER
from gateway.web.console.live import Watchers
from gateway.web.console.replicas import ReplicaFeed
from tests.conftest import PIXEL, TOKEN, GatewayServer, make_event, wait_until
from tests.test_console import API_KEY, PASSWORD, RAW_EMAIL, log_in


class Replica:
    """What one gateway process holds for the console: its buffer, its feed, its pages."""

    def __init__(self, name: str, redis_url: str, prefix: str) -> None:
        self.recent = RecentEvents(100)
        self.feed = ReplicaFeed(
            redis_url,
            self.recent,
            prefix=prefix,
            replica=name,
            hello_seconds=0.2,
            heard_seconds=1.0,
        )
        self.watchers = Watchers(self.recent, self.feed)


async def until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[Callable[[str], Replica]]:
    made: list[Replica] = []

    def make(name: str) -> Replica:
        made.append(Replica(name, redis_url, prefix="test-console"))
        made[-1].feed.start()
        return made[-1]

    yield make
    for replica in made:
        await replica.feed.close()


Rows = Callable[[Callable[[dict[str, Any]], bool]], Awaitable[dict[str, Any]]]


def reader(stream: AsyncIterator[bytes]) -> Rows:
    """Read a page's stream until a row satisfies `done`; return that row."""

    async def read(done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async with asyncio.timeout(10):
            while True:
                chunk = await anext(stream)
                for line in chunk.split(b"\n\n"):
                    if line.startswith(b"data: "):
                        row: dict[str, Any] = orjson.loads(line[6:])
                        if done(row):
                            return row

    return read


@pytest.mark.anyio
async def test_a_page_on_b_shows_what_a_stored_and_whoever_delivered_it(
    replicas: Callable[[str], Replica],
) -> None:
    a, b = replicas("replica-a"), replicas("replica-b")
    a.recent.accepted([make_event(0)], SERVER)  # before any page: costs A nothing
    await asyncio.sleep(0)
    assert not a.feed.publishing and not a.recent.keep_events and not a.recent.listened

    stream = b.watchers.stream()
    assert await anext(stream) == b": watching\n\n"
    await until(lambda: a.feed.publishing, "replica A did not hear that a page watches on B")
    assert a.recent.keep_events and a.recent.listened
    rows = reader(stream)

    stored = make_event(1)
    a.recent.accepted([stored], SERVER)
    row = await rows(lambda r: r["event_id"] == stored.event_id)
    assert row["replica"] == "replica-a" and row["source"] == "server"
    assert row["keys"] == ["email"] and row["score"] == 2 and row["state"] == "accepted"

    # A's delivery answered for it: the settlement comes through A's tap
    a.recent.settled(Settlement(DELIVERED, PIXEL, [["Purchase", stored.event_id]], 2.0, 7, 0))
    row = await rows(lambda r: r["event_id"] == stored.event_id and r["state"] == DELIVERED)
    assert row["steps"][-1]["request"] == 7 and row["steps"][-1]["code"] == 0

    # B's own delivery took the next one, before A's tick had shared it
    early = make_event(2)
    a.recent.accepted([early], SERVER)
    b.recent.settled(Settlement(DELIVERED, PIXEL, [["Purchase", early.event_id]], 3.0, 8, 0))
    row = await rows(lambda r: r["event_id"] == early.event_id and r["state"] == DELIVERED)
    assert row["replica"] == "replica-a" and row["steps"][-1]["request"] == 8

    # a page on A too: B's delivery answers for A's own event on A's page
    on_a = a.watchers.stream()
    assert await anext(on_a) == b": watching\n\n"
    await until(lambda: b.feed.publishing, "replica B did not hear that a page watches on A")
    own = make_event(3)
    a.recent.accepted([own], SERVER)
    b.recent.settled(Settlement(DELIVERED, PIXEL, [["Purchase", own.event_id]], 4.0, 9, 0))
    row = await reader(on_a)(lambda r: r["event_id"] == own.event_id and r["state"] == DELIVERED)
    assert "replica" not in row and row["steps"][-1]["request"] == 9
    await on_a.aclose()

    # the last page closes: A stops sharing once it no longer hears from B
    await stream.aclose()
    await until(lambda: not a.feed.publishing, "replica A kept publishing with no page open")
    assert not a.recent.keep_events and not a.recent.listened


@pytest.mark.anyio
async def test_the_ip_is_masked_before_it_leaves_the_replica(
    replicas: Callable[[str], Replica],
) -> None:
    import dataclasses

    a, b = replicas("replica-a"), replicas("replica-b")
    stream = b.watchers.stream()
    await anext(stream)
    await until(lambda: a.feed.publishing, "replica A did not hear that a page watches on B")
    event = make_event(1)
    event = dataclasses.replace(event, user={**event.user, "ip": "203.0.113.9"})
    a.recent.accepted([event], SERVER)
    await reader(stream)(lambda r: r["event_id"] == event.event_id)
    trace = b.recent.find(PIXEL, "Purchase", event.event_id)
    assert trace is not None and trace.accepted is not None
    assert trace.accepted.user["ip"] == "203.0.113.x"
    kept = a.recent.find(PIXEL, "Purchase", event.event_id)
    assert kept is not None and kept.accepted is not None
    assert kept.accepted.user["ip"] == "203.0.113.9"  # only what leaves A is masked
    await stream.aclose()


@pytest.fixture
def two_replicas(
    serve_gateway: Callable[..., GatewayServer], redis_url: str
) -> Iterator[tuple[GatewayServer, GatewayServer]]:
    """Two gateways, each delivering from its own child process, on one Redis outbox."""
    servers = tuple(
        serve_gateway(
            outbox={"url": redis_url},
            console={"admin_password": PASSWORD},
            server_api={"api_keys": [API_KEY]},
        )
        for _ in range(2)
    )
    yield servers[0], servers[1]


def test_an_event_sent_to_a_shows_delivered_on_the_console_of_b(
    two_replicas: tuple[GatewayServer, GatewayServer],
) -> None:
    a, b = two_replicas
    assert a.gateway is not None and a.gateway.replicas is not None
    feed = a.gateway.replicas
    event = {
        "event": "Purchase",
        "event_id": "replica-1",
        "page": {"url": "https://shop.example/"},
        "user": {"email": RAW_EMAIL, "ip": "203.0.113.9", "user_agent": "Mozilla/5.0 test"},
    }
    rows: list[bytes] = []
    with httpx.Client(base_url=b.url, timeout=15) as console:
        log_in(console)
        with console.stream("GET", "/console/stream") as stream:
            for line in stream.iter_lines():
                if line == ": watching":
                    wait_until(lambda: feed.publishing, "A never heard of B's page")
                    sent = httpx.post(
                        f"{a.url}/v1/events",
                        json=event,
                        headers={"Authorization": f"Bearer {API_KEY}"},
                    )
                    assert sent.status_code == 202
                elif line.startswith("data: "):
                    rows.append(line[6:].encode())
                    row = orjson.loads(rows[-1])
                    if row["event_id"] == "replica-1" and row["state"] == DELIVERED:
                        break
        assert row["replica"] == feed.replica
        assert row["keys"] == ["email", "ip_user_agent"] and row["score"] == 3
        assert row["steps"][-1]["code"] == 0 and row["steps"][-1]["request_id"]
        shown = console.get(
            "/console/event", params={"pixel": PIXEL, "event": "Purchase", "id": "replica-1"}
        )
        assert shown.status_code == 200
        assert shown.json()["request"]["data"][0]["user"]["ip"] == "203.0.113.x"
        text = b"".join(rows).decode() + shown.text

        def charted() -> bool:  # A's count reaches B's chart at A's next flush
            overview = console.get("/console/overview").json()
            return overview["shared"] and sum(overview["pixels"][PIXEL]["per_minute"]) == 1

        wait_until(charted, "B's chart never counted the event A stored")
    assert RAW_EMAIL not in text and TOKEN not in text and "203.0.113.9" not in text
