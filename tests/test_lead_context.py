"""The lead-context store on both backends: merge, expiry, bound, keyed hashes only."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.ingest.leads import LeadMemory, lead_memory
from gateway.storage.backend import Backend, open_backend
from gateway.storage.leads import LeadContext
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.anyio
SECRET_ID = "lead-secret-value-4711"
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


MemoryFactory = Callable[..., Awaitable[LeadMemory]]


@pytest.fixture
def backend(storage_url: str) -> str:
    return storage_url


@pytest.fixture
async def make_memory(
    backend: str, make_settings: SettingsFactory
) -> AsyncIterator[tuple[MemoryFactory, Clock]]:
    clock = Clock()
    opened: list[tuple[Backend, LeadMemory]] = []

    async def make(**postbacks: Any) -> LeadMemory:
        """A gateway's store; with SQLite (one process per file) the earlier one stops first."""
        if backend.startswith("sqlite"):
            for storage, memory in opened:
                await memory.store.close()
                await storage.close()
        settings = make_settings(
            outbox={"url": backend},
            cookies={"secrets": ["cookie-secret-0123456789abcdef"]},
            postbacks=postbacks,
        )
        storage = open_backend(settings.outbox)
        await storage.outbox.open()
        memory = lead_memory(settings, storage, clock=clock)
        await memory.store.open()
        opened.append((storage, memory))
        return memory

    yield make, clock
    for storage, memory in opened:  # closing twice is fine: both are idempotent
        await memory.store.close()
        await storage.close()


def keys(memory: LeadMemory, lead_id: str) -> list[str]:
    return memory.keys_of({}, {"lead_id": lead_id})


async def test_remembered_context_is_found_by_any_replica_after_a_restart(
    make_memory: tuple[MemoryFactory, Clock],
) -> None:
    make, clock = make_memory
    first = await make()
    first.store.remember(
        [
            (k, LeadContext(ttclid="E.C.P.1", ttclid_at=clock.now, ip="1.2.3.4"))
            for k in keys(first, SECRET_ID)
        ]
    )
    await first.store.close()  # writes what is queued: a restart loses nothing
    second = await make()  # a restart, or another replica: same storage, same secret
    found = await second.store.lookup(keys(second, SECRET_ID))
    assert found == LeadContext(ttclid="E.C.P.1", ttclid_at=clock.now, ip="1.2.3.4")
    assert await second.store.lookup(keys(second, "someone-else")) is None
    assert (second.store.stats.hits, second.store.stats.misses) == (1, 1)


async def test_one_read_answers_many_events_each_with_its_own_keys(
    make_memory: tuple[MemoryFactory, Clock],
) -> None:
    """A chunk of an import (or a batch) is looked up at once; each event still gets only
    what its own keys hold, its first key winning."""
    make, _ = make_memory
    memory = await make()
    [lead_a], [lead_b] = keys(memory, "lead-a"), keys(memory, "lead-b")
    memory.store.remember(
        [(lead_a, LeadContext(ip="1.1.1.1", ttp="a")), (lead_b, LeadContext(ip="2.2.2.2"))]
    )
    found = await memory.store.lookup_each([[lead_b, lead_a], [], [lead_a], ["unknown"]])
    assert found == [
        LeadContext(ip="2.2.2.2", ttp="a"),
        None,
        LeadContext(ip="1.1.1.1", ttp="a"),
        None,
    ]
    assert (memory.store.stats.hits, memory.store.stats.misses) == (2, 1)


async def test_a_later_page_keeps_the_click_and_its_first_sight(
    make_memory: tuple[MemoryFactory, Clock],
) -> None:
    make, clock = make_memory
    memory = await make()
    (key,) = keys(memory, SECRET_ID)
    first_sight = clock.now
    memory.store.remember([(key, LeadContext(ttclid="E.C.P.1", ttclid_at=first_sight))])
    await memory.store.flush()
    clock.now += 60
    memory.store.remember([(key, LeadContext(ttclid="E.C.P.1", ttclid_at=clock.now, ttp="t2"))])
    await memory.store.flush()
    memory.store.remember([(key, LeadContext(url="https://shop.example/2"))])
    found = await memory.store.lookup([key])
    assert found == LeadContext(
        ttclid="E.C.P.1", ttclid_at=first_sight, ttp="t2", url="https://shop.example/2"
    )


async def test_the_same_click_keeps_its_earliest_time_whoever_writes_last(
    make_memory: tuple[MemoryFactory, Clock],
) -> None:
    """A rolling upgrade: an older replica stored the click with the time it stored the lead
    (day 20); this one knows when the click happened (day 0). The earlier time stands, in
    either order, and the click is expired on day 35 (issue 22, point 1)."""
    make, clock = make_memory
    memory = await make()
    [first, second] = keys(memory, "lead-1") + keys(memory, "lead-2")
    day_0, day_20 = clock.now, clock.now + 20 * DAY
    clock.now = day_20
    for key, order in ((first, (day_20, day_0)), (second, (day_0, day_20))):
        for at in order:
            memory.store.remember([(key, LeadContext(ttclid="E.C.P.1", ttclid_at=at))])
            await memory.store.flush()
    for key in (first, second):
        assert await memory.store.lookup([key]) == LeadContext(ttclid="E.C.P.1", ttclid_at=day_0)
    clock.now = day_0 + 35 * DAY
    assert (await memory.fill([first], [{}])).click == "expired"


async def test_entries_as_the_previous_release_wrote_them_are_read(
    make_memory: tuple[MemoryFactory, Clock], backend: str
) -> None:
    """Stored before this release: the same names, `ttclid_at` the lead's first storing."""
    make, clock = make_memory
    memory = await make()
    (key,) = keys(memory, SECRET_ID)
    fields = {"ttclid": "E.C.P.1", "ttclid_at": clock.now - DAY, "ip": "1.2.3.4"}
    if backend.startswith("redis"):
        import redis

        client = redis.Redis.from_url(backend)
        client.hset(
            f"tiktok-gateway:context:{key}",
            mapping={**fields, "ttclid_at": repr(fields["ttclid_at"])},
        )
        client.close()
    else:
        from gateway.storage.leads.sqlite import SqliteContextStore

        assert isinstance(memory.store, SqliteContextStore)
        row = (key, json.dumps(fields), clock.now + DAY)
        statement = "INSERT INTO lead_context (key, data, expires) VALUES (?, ?, ?)"
        await memory.store._db.transaction(lambda conn: conn.execute(statement, row))
    filled = await memory.fill([key], [{}])
    assert filled.click == "context" and filled.observed is not None
    assert (filled.observed.ttclid, filled.observed.ip) == ("E.C.P.1", "1.2.3.4")
    memory.store.remember([(key, LeadContext(ttclid="E.C.P.1", ttclid_at=clock.now - 9 * DAY))])
    assert await memory.store.lookup([key]) == LeadContext(
        ttclid="E.C.P.1", ttclid_at=clock.now - 9 * DAY, ip="1.2.3.4"
    )


async def test_a_click_older_than_the_window_is_not_filled_in_and_is_flagged(
    make_memory: tuple[MemoryFactory, Clock],
) -> None:
    make, clock = make_memory
    memory = await make(context_days=28)
    (key,) = keys(memory, SECRET_ID)
    memory.store.remember([(key, LeadContext(ttclid="E.C.P.1", ttclid_at=clock.now - 29 * DAY))])
    filled = await memory.fill([key], [{}])
    assert filled.click == "expired" and filled.observed is not None
    assert filled.observed.ttclid is None
    sent = await memory.fill([key], [{"user": {"ttclid": "E.C.P.mine"}}])
    assert sent.click == "given"


async def test_entries_expire_after_the_window(
    make_memory: tuple[MemoryFactory, Clock], backend: str
) -> None:
    make, clock = make_memory
    memory = await make(context_days=2)
    (key,) = keys(memory, SECRET_ID)
    memory.store.remember([(key, LeadContext(ip="1.2.3.4"))])
    await memory.store.flush()
    if backend.startswith("redis"):  # Redis expires by itself, on its own clock
        import redis

        client = redis.Redis.from_url(backend)
        ttl = client.pttl(f"tiktok-gateway:context:{key}")
        client.close()
        assert 2 * DAY * 1000 - 60_000 < ttl <= 2 * DAY * 1000
    else:
        clock.now += 2 * DAY + 1
        assert await memory.store.lookup([key]) is None


async def test_the_store_is_bounded_and_counts_its_entries(
    make_memory: tuple[MemoryFactory, Clock],
) -> None:
    make, clock = make_memory
    memory = await make(context_max_entries=100)
    for number in range(105):
        clock.now += 1  # later entries expire later: the first five go first
        memory.store.remember([(k, LeadContext(ip="1.2.3.4")) for k in keys(memory, f"l{number}")])
        await memory.store.flush()
    await memory.store.sweep()
    assert memory.store.stats.entries == 100
    assert await memory.store.lookup(keys(memory, "l0")) is None
    assert await memory.store.lookup(keys(memory, "l104")) is not None


async def test_keys_are_stored_as_keyed_hashes_never_raw(
    make_memory: tuple[MemoryFactory, Clock], backend: str, tmp_path: Path
) -> None:
    make, _ = make_memory
    memory = await make()
    memory.store.remember([(k, LeadContext(ip="1.2.3.4")) for k in keys(memory, SECRET_ID)])
    await memory.store.flush()
    if backend.startswith("redis"):
        import redis

        client = redis.Redis.from_url(backend)
        stored = b" ".join(client.keys("*"))
        client.close()
    else:
        stored = await asyncio.to_thread(read_files, tmp_path)
    assert keys(memory, SECRET_ID)[0].encode() in stored  # the keyed hash is there…
    assert SECRET_ID.encode() not in stored  # …never the value, nor its plain digest

    assert hashlib.sha256(SECRET_ID.encode()).hexdigest().encode() not in stored


def read_files(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.glob("outbox.sqlite3*"))


@pytest.mark.parametrize(
    ("browser", "backend_event"),
    [
        (
            {
                "user": {
                    "external_id": [
                        "80fba0ae1c48e3978e43e4efc365e14e12ea0c830ba8ba5b9a2dafc7e3f2ab8b"
                    ]
                }
            },
            {"user": {"external_id": " user_123 "}},
        ),
        ({"properties": {"order_id": "1001"}}, {"properties": {"order_id": "1001"}}),
        ({"properties": {"lead_id": "L-9"}}, {"properties": {"lead_id": "L-9"}}),
        ({"properties": {"lead_id": "L-9"}}, {"user": {"external_id": "L-9"}}),
    ],
)
async def test_browser_events_are_remembered_by_each_identity_key(
    make_memory: tuple[MemoryFactory, Clock], browser: dict[str, Any], backend_event: dict[str, Any]
) -> None:
    from gateway.core.event import Destination, Event
    from gateway.ingest.policy import BROWSER, SERVER

    make, _ = make_memory
    memory = await make()
    seen = Event(
        Destination("web", "CPIXEL0001"), "ViewContent", 1, "v-1",
        user={"ttclid": "E.C.P.k", "ip": "1.2.3.4", **browser.get("user", {})},
        properties=browser.get("properties", {}),
        page={"url": "https://shop.example/landing"},
    )  # fmt: skip
    memory.accepted([seen], SERVER)  # only the browser path leaves context behind
    assert (await memory.fill(memory.keys_of(backend_event), [backend_event])).observed is None
    memory.accepted([seen], BROWSER)
    filled = await memory.fill(memory.keys_of(backend_event), [backend_event])
    assert filled.observed is not None and filled.observed.ttclid == "E.C.P.k"
    assert filled.url == "https://shop.example/landing" and filled.click == "context"


# --- who may write an entry (issue 21, point 4) --------------------------------------------


def owned(visitor: str, **values: Any) -> LeadContext:
    return LeadContext(visitor=visitor, **values)


async def test_an_entry_belongs_to_the_visitor_who_wrote_it_first(
    make_memory: tuple[MemoryFactory, Clock],
) -> None:
    """Another visitor's write of the same key is refused, queued or stored; the owner's
    later visit refreshes it; once expired, the key is anyone's again."""
    make, clock = make_memory
    memory = await make(context_days=2)
    (key,) = keys(memory, "L-1001")
    memory.store.remember([(key, owned("a", ttclid="E.C.P.a", ttclid_at=clock.now, ip="1.1.1.1"))])
    memory.store.remember([(key, owned("b", ttclid="E.C.P.b", ip="6.6.6.6"))])  # same queue
    await memory.store.flush()
    memory.store.remember([(key, owned("b", ttclid="E.C.P.b", ip="6.6.6.6"))])  # stored
    await memory.store.flush()
    memory.store.remember([(key, owned("a", url="https://shop.example/2"))])  # a's next page
    found = await memory.store.lookup([key])
    assert found == owned(
        "a", ttclid="E.C.P.a", ttclid_at=clock.now, ip="1.1.1.1", url="https://shop.example/2"
    )
    assert memory.store.stats.refused == 2
    clock.now += 2 * DAY + 1
    if memory.store.__class__.__name__ == "RedisContextStore":  # Redis expires on its own clock
        await memory.store._redis.delete(f"tiktok-gateway:context:{key}")
    memory.store.remember([(key, owned("b", ip="6.6.6.6"))])
    assert await memory.store.lookup([key]) == owned("b", ip="6.6.6.6")


async def test_an_event_never_mixes_entries_of_two_visitors(
    make_memory: tuple[MemoryFactory, Clock],
) -> None:
    """A Purchase naming the lead (visitor a's) and an order id claimed ahead by visitor b
    gets a's context only: b's click does not fill in the click a's entry lacks."""
    make, _ = make_memory
    memory = await make()
    [lead, order] = keys(memory, "L-1") + keys(memory, "1002")
    memory.store.remember([(lead, owned("a", ip="1.1.1.1")), (order, owned("b", ttclid="E.C.P.b"))])
    assert await memory.store.lookup_each([[lead, order], [order, lead]]) == [
        owned("a", ip="1.1.1.1"),
        owned("b", ttclid="E.C.P.b"),
    ]


async def test_eviction_keeps_entries_a_backend_event_has_found(
    make_memory: tuple[MemoryFactory, Clock],
) -> None:
    """A flood of new entries past the bound evicts entries no backend event has joined, not
    the oldest leads the lead system is still sending postbacks for."""
    make, clock = make_memory
    memory = await make(context_max_entries=100)

    async def write(names: list[str]) -> None:
        clock.now += 1
        memory.store.remember(
            [(k, owned("v", ip="1.1.1.1")) for n in names for k in keys(memory, n)]
        )
        await memory.store.flush()

    joined = [f"joined-{n}" for n in range(10)]
    await write(joined)  # the oldest: the first to go by expiry alone
    await write([f"quiet-{n}" for n in range(90)])
    for name in joined:
        assert await memory.store.lookup(keys(memory, name)) is not None
    await write([f"flood-{n}" for n in range(50)])
    await memory.store.sweep()
    assert (memory.store.stats.entries, memory.store.stats.evicted) == (100, 50)
    for name in joined:
        assert await memory.store.lookup(keys(memory, name)) is not None, name
    assert await memory.store.lookup(keys(memory, "flood-49")) is not None


async def test_a_table_of_the_previous_release_gets_the_joined_column(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    import sqlite3

    path = tmp_path / "outbox.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE lead_context (key TEXT PRIMARY KEY, data TEXT, expires REAL)")
        conn.execute("INSERT INTO lead_context VALUES ('k', '{\"ip\": \"1.1.1.1\"}', 9e99)")
    conn.close()
    settings = make_settings(outbox={"url": f"sqlite:///{path}"})
    storage = open_backend(settings.outbox)
    await storage.outbox.open()
    memory = lead_memory(settings, storage)
    await memory.store.open()
    try:
        assert await memory.store.lookup(["k"]) == LeadContext(ip="1.1.1.1")
        await memory.store.flush()  # marks it joined, in the new column
        await memory.store.sweep()
        assert memory.store.stats.entries == 1
    finally:
        await memory.store.close()
        await storage.close()
