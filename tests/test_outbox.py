"""The outbox contract, run on both backends: SQLite (a real file), Redis (a real server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gateway.ingest.parser import ParseRules, parse_event
from gateway.storage.outbox import Outbox, OutboxUnavailable
from gateway.storage.outbox.sqlite import SqliteOutbox
from tests.conftest import OTHER_PIXEL, PIXEL, BackendFactory, SettingsFactory, make_event

pytestmark = pytest.mark.anyio

OutboxFactory = Callable[..., Awaitable[Outbox]]


@pytest.fixture(params=["sqlite", "redis"])
async def make_outbox(
    request: pytest.FixtureRequest, tmp_path: Path, make_backend: BackendFactory
) -> AsyncIterator[OutboxFactory]:
    """Opens outboxes of the parametrised backend, all on the same storage; closes them after."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
    else:
        url = f"sqlite:///{tmp_path}/outbox.sqlite3"
    opened: list[Outbox] = []

    async def make(lease_seconds: float = 300.0) -> Outbox:
        outbox = make_backend(url, lease_seconds=lease_seconds).outbox
        await outbox.open()
        opened.append(outbox)
        return outbox

    yield make
    for outbox in opened:
        await outbox.close()


async def test_add_claim_ack(make_outbox: OutboxFactory) -> None:
    outbox = await make_outbox()
    await outbox.add([make_event(i) for i in range(5)])
    claimed = await outbox.claim(3, time.time())
    assert [c.decode().event_id for c in claimed] == [f"ev-{PIXEL}-{i}" for i in range(3)]
    assert claimed[0].decode() == make_event(0, event_time=claimed[0].decode().event_time)
    rest = await outbox.claim(10, time.time())
    assert [c.decode().event_id for c in rest] == [f"ev-{PIXEL}-3", f"ev-{PIXEL}-4"]
    assert await outbox.claim(10, time.time()) == []  # leased, not claimable twice
    await outbox.ack([c.id for c in claimed + rest])
    counts = await outbox.counts(time.time())
    assert (counts.pending, counts.in_flight, counts.retrying, counts.dead) == (0, 0, 0, 0)


async def test_expired_lease_is_claimed_again(make_outbox: OutboxFactory) -> None:
    outbox = await make_outbox(lease_seconds=0.2)
    await outbox.add([make_event(1)])
    first = await outbox.claim(10, time.time())
    assert len(first) == 1
    await asyncio.sleep(0.35)
    again = await outbox.claim(10, time.time() + 0.35)
    assert [c.decode().event_id for c in again] == [first[0].decode().event_id]


async def test_retry_waits_until_due_and_counts_attempts(make_outbox: OutboxFactory) -> None:
    outbox = await make_outbox()
    await outbox.add([make_event(1)])
    [claimed] = await outbox.claim(10, time.time())
    now = time.time()
    await outbox.retry([claimed.id], now + 60, "HTTP 503")
    assert await outbox.claim(10, now) == []
    counts = await outbox.counts(now)
    assert counts.retrying == 1 and counts.pixels[PIXEL].retrying == 1
    [again] = await outbox.claim(10, now + 61)
    assert again.attempts == 1 and again.decode().event_id == claimed.decode().event_id


async def test_dead_letters_replay_and_purge(make_outbox: OutboxFactory) -> None:
    outbox = await make_outbox()
    await outbox.add([make_event(1), make_event(2, pixel=OTHER_PIXEL), make_event(3)])
    claimed = await outbox.claim(10, time.time())
    by_pixel = {c.decode().event_id: c.id for c in claimed}
    now = time.time()
    await outbox.dead_letter(
        [by_pixel[f"ev-{PIXEL}-1"]], "code 40002: bad id", 40002, now, request_id="r-40002"
    )
    await outbox.dead_letter([by_pixel[f"ev-{OTHER_PIXEL}-2"]], "code 40105: token", 40105, now)
    counts = await outbox.counts(now)
    assert counts.dead == 2 and counts.pixels[OTHER_PIXEL].dead == 1
    letters = {d.event.event_id: d for d in await outbox.dead_letters()}
    assert letters[f"ev-{PIXEL}-1"].reason == "code 40002: bad id"
    assert letters[f"ev-{PIXEL}-1"].code == 40002
    assert letters[f"ev-{PIXEL}-1"].request_id == "r-40002"  # TikTok support asks for it
    assert letters[f"ev-{OTHER_PIXEL}-2"].request_id is None
    assert await outbox.replay(pixel=OTHER_PIXEL) == 1
    assert await outbox.replay(code=40105) == 0
    replayed = await outbox.claim(10, time.time())
    assert [c.decode().event_id for c in replayed] == [f"ev-{OTHER_PIXEL}-2"]
    assert await outbox.purge_dead(older_than=now - 10) == 0
    assert await outbox.purge_dead(older_than=now + 10) == 1
    assert (await outbox.counts(time.time())).dead == 0


async def test_counts_per_pixel_with_oldest_age(make_outbox: OutboxFactory) -> None:
    outbox = await make_outbox()
    await outbox.add([make_event(1), make_event(2), make_event(3, pixel=OTHER_PIXEL)])
    await outbox.claim(1, time.time())
    counts = await outbox.counts(time.time() + 5)
    assert (counts.pending, counts.in_flight) == (2, 1)
    assert counts.pixels[PIXEL].pending + counts.pixels[PIXEL].in_flight == 2
    assert counts.oldest_age_seconds is not None and counts.oldest_age_seconds >= 5


async def test_claim_survives_reopen(make_outbox: OutboxFactory) -> None:
    """Events claimed by a process that then went away are claimable after a restart."""
    first = await make_outbox(lease_seconds=0.2)
    await first.add([make_event(i) for i in range(3)])
    assert len(await first.claim(10, time.time())) == 3
    await first.close()
    await asyncio.sleep(0.3)
    second = await make_outbox(lease_seconds=0.2)
    again = await second.claim(10, time.time())
    assert sorted(c.decode().event_id for c in again) == [f"ev-{PIXEL}-{i}" for i in range(3)]


async def test_raw_identifiers_never_reach_storage(
    make_outbox: OutboxFactory, make_settings: SettingsFactory, tmp_path: Path, redis_url: str
) -> None:
    settings = make_settings()
    raw = {
        "event": "Purchase",
        "page": {"url": "https://shop.example/"},
        "user": {
            "email": "secret.person@example.com",
            "phone": "+12133734253",
            "external_id": "crm-777",
        },
    }
    parsed = parse_event(
        raw, pixel=settings.pixels[0], rules=ParseRules.from_settings(settings), now=time.time()
    )
    outbox = await make_outbox()
    await outbox.add(parsed.events)
    stored = await asyncio.to_thread(
        lambda: b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    )
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.keys("*"):
        stored += client.dump(key) or b""
    client.close()
    assert stored, "nothing was stored at all"
    for secret in (b"secret.person", b"2133734253", b"crm-777"):
        assert secret not in stored


async def test_sqlite_group_commit_shares_transactions(tmp_path: Path) -> None:
    outbox = SqliteOutbox(str(tmp_path / "o.sqlite3"))
    await outbox.open()
    try:
        await asyncio.gather(*(outbox.add([make_event(i)]) for i in range(300)))
        assert outbox.commits < 300
        assert (await outbox.counts(time.time())).pending == 300
    finally:
        await outbox.close()


async def test_sqlite_retries_due_among_fresh_events_leave_none_behind(tmp_path: Path) -> None:
    """Fresh events are claimed above a cursor; merged with retries due, the fresh ones
    taken must still be the lowest ids, whatever order they arrived in (two requests commit
    in either order), or the cursor would pass one never sent."""
    outbox = SqliteOutbox(str(tmp_path / "o.sqlite3"))
    await outbox.open()
    try:
        await outbox.add([make_event(i) for i in range(6)])
        [first] = await outbox.claim(1, time.time())
        await outbox.retry([first.id], time.time() - 1, "HTTP 503")  # due now
        await outbox._db.statement(  # the third event arrived last
            lambda conn: conn.execute("UPDATE events SET created = created + 100 WHERE id = 3")
        )
        seen: list[str] = []
        while claimed := await outbox.claim(3, time.time() + 1):
            seen += [c.decode().event_id for c in claimed]
        assert sorted(seen) == sorted(f"ev-{PIXEL}-{i}" for i in range(6))  # each once
    finally:
        await outbox.close()


async def test_sqlite_file_has_one_owner(tmp_path: Path) -> None:
    path = str(tmp_path / "o.sqlite3")
    first = SqliteOutbox(path)
    await first.open()
    try:
        with pytest.raises(OutboxUnavailable, match="in use by another gateway process"):
            await SqliteOutbox(path).open()
    finally:
        await first.close()
    second = SqliteOutbox(path)
    await second.open()  # the lock is released on close
    await second.close()


async def test_sqlite_full_disk_is_outbox_unavailable(tmp_path: Path) -> None:
    outbox = SqliteOutbox(str(tmp_path / "o.sqlite3"))
    await outbox.open()
    try:
        await outbox._db.statement(lambda conn: conn.execute("PRAGMA max_page_count = 1"))
        with pytest.raises(OutboxUnavailable):
            await outbox.add([make_event(i) for i in range(500)])
        with pytest.raises(OutboxUnavailable):
            await outbox.check_writable()
    finally:
        await outbox.close()


async def test_unreachable_redis_is_outbox_unavailable(make_backend: BackendFactory) -> None:
    outbox = make_backend("redis://127.0.0.1:9/0").outbox
    with pytest.raises(OutboxUnavailable):
        await outbox.open()


async def test_an_unstorable_event_fails_alone(make_outbox: OutboxFactory) -> None:
    """A value JSON cannot hold fails its own add; the outbox keeps serving everyone else."""
    import dataclasses

    from gateway.core.errors import EventError

    outbox = await make_outbox()
    bad = dataclasses.replace(make_event(1), properties={"num_items": 10**30})
    with pytest.raises(EventError):
        await outbox.add([bad])
    await outbox.add([make_event(2)])
    claimed = await outbox.claim(10, time.time())
    assert [c.decode().event_id for c in claimed] == [f"ev-{PIXEL}-2"]


async def test_redis_forgets_replicas_that_are_gone(
    redis_url: str, make_backend: BackendFactory
) -> None:
    import redis.asyncio

    from gateway.storage.outbox.redis import RedisOutbox

    ghost = make_backend(redis_url, consumer="ghost-replica").outbox
    await ghost.open()
    await ghost.claim(10, time.time())  # registers the consumer, holding nothing
    holder = make_backend(redis_url, consumer="holding-replica").outbox
    await holder.open()
    await holder.add([make_event(1)])
    assert len(await holder.claim(10, time.time())) == 1  # dies holding an event
    await ghost.close()
    await holder.close()
    await asyncio.sleep(0.05)
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    fresh = RedisOutbox(client, consumer="fresh-replica", forget_consumers_after=0.01)
    await fresh.open()
    stream = "tiktok-gateway:stream"
    names = {c["name"] for c in await client.xinfo_consumers(stream, "dispatchers")}
    await fresh.close()
    await client.aclose()
    assert "ghost-replica" not in names
    assert "holding-replica" in names  # its pending event is still to be taken over


async def test_redis_counts_read_summaries_not_the_stream(
    redis_url: str, make_backend: BackendFactory
) -> None:
    """counts() costs the same for 3,000 waiting events as for 3: no scan of the stream."""
    import redis.asyncio as redis

    outbox = make_backend(redis_url).outbox
    await outbox.open()
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await outbox.add([make_event(i) for i in range(3000)])
        claimed = await outbox.claim(10, time.time())
        await outbox.dead_letter([claimed[0].id], "bad", 40002, time.time())
        await admin.config_resetstat()
        counts = await outbox.counts(time.time())
        stats = await admin.info("commandstats")
    finally:
        await admin.aclose()
        await outbox.close()
    assert (counts.pending, counts.in_flight, counts.dead) == (2990, 9, 1)
    assert counts.pixels[PIXEL].pending + counts.pixels[PIXEL].in_flight == 2999
    assert stats["cmdstat_xrange"]["calls"] == 1  # the head of the stream, COUNT 1
    assert "cmdstat_hscan" not in stats  # dead letters are counted, not listed


async def test_backlog_is_read_without_scanning(make_outbox: OutboxFactory) -> None:
    outbox = await make_outbox()
    empty = await outbox.backlog(time.time())
    assert empty.oldest_age_seconds is None
    await outbox.add([make_event(i) for i in range(2000)])
    later = time.time() + 100
    full = await outbox.backlog(later)
    assert full.stored_bytes > empty.stored_bytes
    assert full.oldest_age_seconds is not None and 100 <= full.oldest_age_seconds < 200
    if isinstance(outbox, SqliteOutbox):  # the disk's room; Redis has none without maxmemory
        assert full.free_bytes is not None and full.free_bytes > 0
    claimed = await outbox.claim(2000, time.time())
    await outbox.ack([c.id for c in claimed])
    assert (await outbox.backlog(later)).oldest_age_seconds is None
    if isinstance(outbox, SqliteOutbox):  # deleted rows' pages are free for reuse
        assert (await outbox.backlog(later)).stored_bytes < full.stored_bytes


def test_test_runs_side_by_side_get_a_redis_database_each(redis_database: str) -> None:
    """Two runs never empty each other's keys: each claims its own database (issue 23)."""
    import redis

    from tests.conftest import claim_redis_database

    registry = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        other, claim = claim_redis_database(registry)
        try:
            assert other != redis_database and not other.endswith("/0")
        finally:
            registry.delete(claim)
    finally:
        registry.close()
