"""The storage backend: the URL picks the parts, closing it closes every connection it made,
and no module but `storage/backend.py` builds a Redis client or asks which backend it is."""

from __future__ import annotations

import ast
import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import gateway
from gateway.core.errors import OutboxUnavailable
from gateway.http.rate_limit import RateLimits
from gateway.ingest.policy import SERVER
from gateway.runtime import Gateway
from gateway.settings import RateLimitSettings
from gateway.storage.backend import Backend
from gateway.storage.leads import LeadContext
from gateway.storage.leads.redis import RedisContextStore
from gateway.storage.leads.sqlite import SqliteContextStore
from gateway.storage.outbox.redis import RedisOutbox
from gateway.storage.outbox.sqlite import SqliteOutbox
from gateway.storage.postback_log import RedisLog, SqliteLog
from gateway.storage.revoked_sessions import RedisRevoked, SqliteRevoked
from gateway.telemetry.per_minute import EventsPerMinute
from gateway.telemetry.recent import RecentEvents
from gateway.telemetry.replicas import ReplicaFeed
from tests.conftest import PIXEL, BackendFactory, SettingsFactory, make_event

ALLOWED = Path(gateway.__file__).parent / "storage" / "backend.py"
CONSTRUCTORS = {"Redis", "StrictRedis", "RedisCluster", "ConnectionPool", "from_url", "from_pool"}


async def _round_trip(backend: Backend) -> None:
    """Open the outbox and write and read through each part the backend hands out."""
    await backend.outbox.open()
    await backend.outbox.add([make_event(1)])
    store = backend.lead_store(ttl_seconds=3600, max_entries=10)
    await store.open()
    store.remember([("lead-1", LeadContext(ttclid="click-1", ttclid_at=time.time()))])
    found = await store.lookup(["lead-1"])
    await store.close()
    assert found is not None and found.ttclid == "click-1"
    journal = backend.postback_log(5)
    await journal.open()
    journal.record("crm", {"trigger": "sale"})
    await journal.close()  # writes what is queued
    assert await journal.backend.last("crm", 5) == [{"trigger": "sale"}]
    ended = backend.revoked_sessions()
    await ended.open()
    await ended.revoke("session-1", time.time() + 60)
    assert await backend.revoked_sessions().revoked("session-1")  # read back from storage


@pytest.mark.anyio
async def test_a_sqlite_url_gives_one_file_and_nothing_to_share(
    tmp_path: Path, make_backend: BackendFactory
) -> None:
    backend = make_backend(f"sqlite:///{tmp_path}/outbox.sqlite3")
    assert isinstance(backend.outbox, SqliteOutbox)
    assert isinstance(backend.lead_store(ttl_seconds=60, max_entries=1), SqliteContextStore)
    assert isinstance(backend.postback_log(1).backend, SqliteLog)
    assert isinstance(backend.revoked_sessions().store, SqliteRevoked)
    assert backend.shared_buckets() is None
    assert backend.shared_counters() is None
    assert backend.console_feed() is None
    await _round_trip(backend)  # the lead store and the log in the outbox's own file


@pytest.mark.anyio
async def test_a_redis_url_gives_shared_parts_each_with_its_timeouts(
    redis_url: str, make_backend: BackendFactory
) -> None:
    backend = make_backend(redis_url)
    assert isinstance(backend.outbox, RedisOutbox)
    assert isinstance(backend.lead_store(ttl_seconds=60, max_entries=1), RedisContextStore)
    assert isinstance(backend.postback_log(1).backend, RedisLog)
    assert isinstance(backend.revoked_sessions().store, RedisRevoked)
    feed = backend.console_feed()
    assert feed is not None and feed.db == int(urlsplit(redis_url).path.strip("/") or 0)
    timeouts = {
        "buckets": backend.shared_buckets(),  # on the request path: fails open fast
        "counters": backend.shared_counters(),
        "feed": feed.client,
    }
    options = {use: c.connection_pool.connection_kwargs for use, c in timeouts.items()}
    assert {use: o["socket_timeout"] for use, o in options.items()} == {
        "buckets": 1,
        "counters": 2,
        "feed": 5,
    }
    assert backend.shared_buckets() is timeouts["buckets"]  # one client per kind of use
    await _round_trip(backend)


@pytest.mark.anyio
async def test_an_outbox_given_to_the_gateway_is_its_backends_and_closed_with_it(
    tmp_path: Path, make_settings: SettingsFactory
) -> None:
    path = tmp_path / "given.sqlite3"
    given = SqliteOutbox(str(path))
    gateway = Gateway(make_settings(outbox={"url": f"sqlite:///{path}"}), outbox=given)
    assert gateway.outbox is given and gateway.backend.outbox is given
    await gateway.start()
    try:
        await gateway.pipeline.store_parsed([make_event(1)], SERVER, checkpoint="c1")  # in the file
    finally:
        await gateway.stop()
    with pytest.raises(OutboxUnavailable):
        await given.counts(time.time())


def _own_connections(port: int) -> set[str]:
    """The local addresses of this process's open TCP connections to `port`: as Redis's
    CLIENT LIST shows them (`addr=`), so other processes' clients are not counted."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if inode in inodes and int(remote.split(":")[1], 16) == port and state == "01":
            ip, local_port = local.split(":")
            address = ".".join(str(int(ip[i : i + 2], 16)) for i in (6, 4, 2, 0))
            found.add(f"{address}:{int(local_port, 16)}")
    return found


async def _listed(admin: Any, addresses: set[str]) -> set[str]:
    """Which of `addresses` Redis lists as connected clients now."""
    return {c["addr"] for c in await admin.client_list()} & addresses


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 10
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


@pytest.mark.anyio
async def test_closing_the_backend_closes_every_connection_it_made(
    redis_url: str, make_backend: BackendFactory
) -> None:
    """Every part used at once (two subscriptions included), then one `close()`: Redis
    lists none of the connections the backend made any more; a second close is harmless."""
    import redis.asyncio

    port = urlsplit(redis_url).port or 6379
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        await admin.ping()
        before = _own_connections(port)
        backend = make_backend(redis_url)
        replicas, counter = await _every_part_used(backend, admin)
        made = _own_connections(port) - before
        # storage, the postback log, buckets, counters, two subscriptions (a pool may reuse)
        assert len(made) >= 5 and await _listed(admin, made) == made
        await counter.stop()
        await replicas.close()
        assert await _listed(admin, made), "the backend's clients are its own to close"
        await backend.close()

        async def none_listed() -> bool:
            return not await _listed(admin, made)

        await _until(none_listed, "Redis still lists connections of a closed backend")
        assert _own_connections(port) == before
        await backend.close()
    finally:
        await admin.aclose()


async def _every_part_used(backend: Backend, admin: Any) -> tuple[ReplicaFeed, EventsPerMinute]:
    await _round_trip(backend)
    limits = RateLimits(
        RateLimitSettings(beacon_per_second=1.0),
        on_refused=lambda _: None,
        redis=backend.shared_buckets(),
    )
    await limits.beacon.admit("192.0.2.1")
    counter = EventsPerMinute([PIXEL], redis=backend.shared_counters())
    counter.accepted([make_event(2)], SERVER)
    await counter.flush()
    feed = backend.console_feed()
    assert feed is not None
    replicas = ReplicaFeed(feed, RecentEvents(10), prefix=f"test-backend-{uuid.uuid4().hex}")
    replicas.start()
    replicas.watch()  # a second subscription, while a page watches
    channels = [replicas._watching_channel, replicas._events_channel]

    async def subscribed() -> bool:
        numbers = dict(await admin.pubsub_numsub(*channels))
        return all(numbers.get(c.encode()) == 1 for c in channels)

    await _until(subscribed, "the feed never subscribed")
    return replicas, counter


def _offences(source: str) -> list[str]:
    """What in `source` constructs a Redis client or asks whether a URL names Redis."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in CONSTRUCTORS:
                found.append(f"line {node.lineno}: {name}(…)")
        elif isinstance(node, ast.ImportFrom) and any(a.name == "is_redis" for a in node.names):
            found.append(f"line {node.lineno}: imports is_redis")
        elif isinstance(node, ast.Attribute | ast.Name) and "is_redis" in (
            getattr(node, "attr", None),
            getattr(node, "id", None),
        ):
            found.append(f"line {node.lineno}: is_redis")
    return found


def test_the_detector_finds_a_client_built_and_a_backend_asked() -> None:
    """The walk below proves something only if it would see an offence: it does."""
    assert len(_offences("import redis\nc = redis.asyncio.Redis.from_url(url)\n")) == 1
    assert len(_offences("from redis.asyncio import Redis\nc = Redis(host='h')\n")) == 1
    assert _offences("from gateway.storage.backend import is_redis\n") != []
    assert _offences("import gateway.storage.backend as b\nb.is_redis(url)\n") != []
    assert _offences("client = backend.shared_counters()\n") == []


def test_only_the_backend_builds_a_redis_client_or_asks_which_backend() -> None:
    package = Path(gateway.__file__).parent
    offences = {
        str(path.relative_to(package)): found
        for path in sorted(package.rglob("*.py"))
        if path != ALLOWED and (found := _offences(path.read_text(encoding="utf-8")))
    }
    assert offences == {}
    built = [o for o in _offences(ALLOWED.read_text(encoding="utf-8")) if "(…)" in o]
    assert len(built) == 1, built  # one function constructs every client
