"""With Redis, the console of any replica shows every replica's events and TikTok's answers.

Two replicas' console feeds on one real Redis (each with its own recent buffer, as two
gateway processes have), then two served gateways on one Redis outbox, read over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.console.live import Watchers
from gateway.core.score import keys_present, score
from gateway.delivery.settlement import DELIVERED, Settlement
from gateway.ingest.policy import SERVER
from gateway.privacy.masking import masked_ip
from gateway.storage.backend import ConsoleFeed
from gateway.telemetry.recent import RecentEvents
from gateway.telemetry.replicas import ReplicaFeed
from tests.conftest import PIXEL, TOKEN, BackendFactory, GatewayServer, make_event, wait_until
from tests.redis_proxy import RedisProxy
from tests.test_console import API_KEY, PASSWORD, RAW_EMAIL, log_in


class Replica:
    """What one gateway process holds for the console: its buffer, its feed, its pages."""

    def __init__(self, name: str, feed: ConsoleFeed, prefix: str, **options: float) -> None:
        self.name = name
        self.recent = RecentEvents(100)
        self.feed = ReplicaFeed(
            feed,
            self.recent,
            prefix=prefix,
            replica=name,
            hello_seconds=0.2,
            heard_seconds=1.0,
            **options,
        )
        self.watchers = Watchers(self.recent, self.feed)


async def until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


Make = Callable[..., Replica]


@pytest.fixture
async def replicas(redis_url: str, make_backend: BackendFactory) -> AsyncIterator[Make]:
    """Replicas on this test's own channels: pub/sub is server-wide (it ignores the db), and
    test runs side by side on one Redis must not hear each other's pages and events."""
    made: list[Replica] = []
    run = uuid.uuid4().hex[:8]

    def make(name: str, *, url: str = redis_url, **options: float) -> Replica:
        feed = make_backend(url).console_feed()
        assert feed is not None
        made.append(Replica(f"{name}-{run}", feed, prefix=f"test-console-{run}", **options))
        made[-1].feed.start()
        return made[-1]

    yield make
    for replica in made:
        await replica.feed.close()


@pytest.fixture
def proxy(redis_url: str) -> Iterator[RedisProxy]:
    proxy = RedisProxy(redis_url)
    yield proxy
    proxy.close()


def other_db(redis_url: str) -> str:
    """The same Redis server, another database (pub/sub only: nothing is written)."""
    base, _, db = redis_url.rpartition("/")
    return f"{base}/{(int(db or 0) + 1) % 16}"


async def subscribers(redis_url: str, channel: str, count: int) -> None:
    """Wait until `count` clients subscribe to `channel` (a feed's, so its private name)."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 10
        while dict(await client.pubsub_numsub(channel)).get(channel.encode(), 0) != count:
            assert time.monotonic() < deadline, f"never {count} subscriber(s) on {channel}"
            await asyncio.sleep(0.02)
    finally:
        await client.aclose()


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
    replicas: Make,
) -> None:
    a, b = replicas("replica-a"), replicas("replica-b")
    unseen = make_event(0)
    a.recent.accepted([unseen], SERVER)  # before any page: costs A nothing
    assert not a.feed.publishing and not a.recent.keep_events

    stream = b.watchers.stream()
    assert await anext(stream) == b": watching\n\n"
    await until(lambda: a.feed.publishing, "replica A did not hear that a page watches on B")
    assert a.recent.keep_events
    rows = reader(stream)

    stored = make_event(1)
    a.recent.accepted([stored], SERVER)
    row = await rows(lambda r: r["event_id"] == stored.event_id)
    assert row["replica"] == a.name and row["source"] == "server"
    # the sentinel came through: had A kept the event before any page, it came first
    assert b.recent.find(PIXEL, "Purchase", unseen.event_id) is None
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
    assert row["replica"] == a.name and row["steps"][-1]["request"] == 8

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
    assert not a.recent.keep_events


PHONE = "5f8e2b7c1d3a4e6f9081726354abcdef0123456789abcdef0123456789abcdef"
TTCLID = "E.C.P.CsABc1d2e3f4g5h6i7j8k9l0m1n2o3p4q5r6s7t8u9v0w1x2y3z4"
TTP = "2Xk9Qw3Er4Ty5Ui6Op7As8Df9Gh0"


@pytest.mark.parametrize(
    ("ip", "shown"),
    [
        ("203.0.113.9", "203.0.113.x"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2:…"),
        ("2001:db8::5", "2001:db8:0:0:…"),  # compressed: fewer than 4 groups before the host
        ("fe80::1", "fe80:0:0:0:…"),
        ("::1", "0:0:0:0:…"),
        ("::ffff:203.0.113.9", "203.0.113.x"),  # IPv4-mapped: an IPv4 host
        ("203.0.113.x", "203.0.113.x"),  # masked by another replica already
        ("2001:db8:0:0:…", "2001:db8:0:0:…"),
        ("not an address", "…"),
    ],
)
def test_the_ip_shown_is_its_network(ip: str, shown: str) -> None:
    assert masked_ip(ip) == shown


@pytest.mark.anyio
async def test_what_leaves_the_replica_is_what_the_page_shows(replicas: Make) -> None:
    """The IP's host part, full digests, click ids, `_ttp` and query values never cross."""
    a, b = replicas("replica-a"), replicas("replica-b")
    stream = b.watchers.stream()
    await anext(stream)
    await until(lambda: a.feed.publishing, "replica A did not hear that a page watches on B")
    event = make_event(1)
    (email,) = event.user["email"]
    landing = f"https://shop.example/p?utm_source=tiktok&ttclid={TTCLID}#top"
    event = dataclasses.replace(
        event,
        user={**event.user, "phone": [PHONE], "ttclid": TTCLID, "ttp": TTP, "ip": "2001:db8::5"},
        page={"url": landing, "referrer": f"https://www.tiktok.com/?ttclid={TTCLID}"},
    )
    a.recent.accepted([event], SERVER)
    row = await reader(stream)(lambda r: r["event_id"] == event.event_id)
    assert row["keys"] == keys_present(event.user)  # the receiver needs only presence
    assert row["score"] == score(event.user)
    trace = b.recent.find(PIXEL, "Purchase", event.event_id)
    assert trace is not None and trace.accepted is not None
    crossed = orjson.dumps(trace.accepted.to_tiktok()).decode()
    for secret in (email, PHONE, TTCLID, TTP, "2001:db8::5"):
        assert secret not in crossed
    assert trace.accepted.user["ip"] == "2001:db8:0:0:…"
    assert trace.accepted.user["email"] == [email[:10] + "…"]
    assert trace.accepted.user["ttclid"] == TTCLID[:14] + "…"
    assert (
        trace.accepted.page["url"]
        == f"https://shop.example/p?utm_source=tiktok&ttclid={TTCLID[:14]}…"
    )
    kept = a.recent.find(PIXEL, "Purchase", event.event_id)
    assert kept is not None and kept.accepted is not None
    assert kept.accepted.user == event.user  # only what leaves A is shortened
    await stream.aclose()


@pytest.mark.anyio
async def test_a_deployment_on_another_database_hears_nothing(
    replicas: Make, redis_url: str
) -> None:
    """Staging on db n+1 and production on db n of one Redis server: pub/sub ignores the
    database, the channels must not."""
    page, same = replicas("page"), replicas("same-db")
    elsewhere = replicas("other-db", url=other_db(redis_url))
    stream = page.watchers.stream()
    await anext(stream)
    await until(lambda: same.feed.publishing, "a replica of the same database never heard")
    private = make_event(1)
    elsewhere.recent.accepted([private], SERVER)
    sentinel = make_event(2)
    same.recent.accepted([sentinel], SERVER)
    await reader(stream)(lambda r: r["event_id"] == sentinel.event_id)
    assert not elsewhere.feed.publishing
    assert page.recent.find(PIXEL, "Purchase", private.event_id) is None
    await stream.aclose()


@pytest.mark.anyio
async def test_a_malformed_message_does_not_end_the_feed(
    replicas: Make, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import redis.asyncio

    a, b = replicas("replica-a"), replicas("replica-b")
    stream = b.watchers.stream()
    await anext(stream)
    await until(lambda: a.feed.publishing, "replica A did not hear that a page watches on B")
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        for junk in (b"not json", b'{"r": "x", "e": [1], "s": []}', b"[]", b'{"r": 1}'):
            await client.publish(b.feed._events_channel, junk)
    finally:
        await client.aclose()
    sentinel = make_event(1)
    a.recent.accepted([sentinel], SERVER)
    await reader(stream)(lambda r: r["event_id"] == sentinel.event_id)
    malformed = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(malformed) == 1  # once, not once a message
    await stream.aclose()


@pytest.mark.anyio
async def test_a_redis_outage_is_logged_once(
    replicas: Make, proxy: RedisProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.down()
    a = replicas("replica-a", url=proxy.url, retry_seconds=0.01)
    stream = a.watchers.stream()  # listening and watching both fail, again and again
    await anext(stream)
    await until(lambda: proxy.connections >= 30, "the feed did not try again")
    warnings = [r.getMessage() for r in caplog.records if r.name.endswith("replicas")]
    assert sorted(warnings) == sorted(set(warnings)) and len(warnings) == 2, warnings
    await stream.aclose()


@pytest.mark.anyio
async def test_a_deaf_subscription_is_made_again(replicas: Make, proxy: RedisProxy) -> None:
    """A failover without a TCP reset: the old connection stays open and says nothing."""
    a = replicas("replica-a", url=proxy.url, ping_seconds=0.2)
    b = replicas("replica-b")
    await subscribers(proxy.url, a.feed._watching_channel, 2)  # both listen for pages
    proxy.deafen()
    stream = b.watchers.stream()
    await anext(stream)
    await until(lambda: a.feed.publishing, "replica A never heard of B's page again")
    await stream.aclose()


@pytest.mark.anyio
async def test_close_awaits_the_watch_a_closed_page_cancelled(
    replicas: Make, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page closes, then the gateway stops: the cancelled watch's subscription is closed
    before `close` returns (and before the client it belongs to)."""
    a = replicas("replica-a")
    await subscribers(redis_url, a.feed._watching_channel, 1)  # A listens (not slowed)
    client = a.feed._redis
    made = client.pubsub
    closed: list[bool] = []

    def slow_to_close(**options: Any) -> Any:  # a subscription whose clean-up takes a while
        pubsub = made(**options)
        done = pubsub.aclose

        async def aclose() -> None:
            await asyncio.sleep(0.3)
            await done()
            closed.append(True)

        pubsub.aclose = aclose
        return pubsub

    monkeypatch.setattr(client, "pubsub", slow_to_close)
    stream = a.watchers.stream()
    await anext(stream)
    await subscribers(redis_url, a.feed._events_channel, 1)  # the page's watch reads
    await stream.aclose()  # the last page closed: its watch task is cancelled
    await a.feed.close()
    assert closed == [True]


@pytest.mark.anyio
async def test_close_does_not_wait_forever_for_a_stuck_clean_up(
    replicas: Make, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A clean-up stuck on a connection gone deaf does not hold the gateway's stop."""
    from gateway.telemetry import replicas as module

    monkeypatch.setattr(module, "_CLOSE_SECONDS", 0.2)
    a = replicas("replica-a")

    async def stuck() -> None:  # takes a first cancel for a clean-up that never ends
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3600)

    task = asyncio.create_task(stuck(), name="a stuck watch")
    await asyncio.sleep(0)
    task.cancel()
    a.feed._cancelled.add(task)
    async with asyncio.timeout(5):
        await a.feed.close()
    assert "a stuck watch did not stop within 0.2 s" in caplog.text
    with contextlib.suppress(asyncio.CancelledError):
        await task  # close cancelled it again: it ends


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
