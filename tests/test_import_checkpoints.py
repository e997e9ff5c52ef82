"""The outbox's import checkpoints: stored in the same transaction as a chunk's events."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.storage.outbox import Outbox
from gateway.storage.outbox.sqlite import SqliteOutbox
from tests.conftest import BackendFactory, make_event

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "redis"])
async def outbox(
    request: pytest.FixtureRequest, tmp_path: Path, make_backend: BackendFactory
) -> AsyncIterator[Outbox]:
    if request.param == "sqlite":
        store: Outbox = SqliteOutbox(str(tmp_path / "outbox.sqlite3"))
    else:
        store = make_backend(request.getfixturevalue("redis_url")).outbox
    await store.open()
    yield store
    await store.close()


async def test_a_checkpoint_is_stored_with_its_events(outbox: Outbox) -> None:
    assert not await outbox.checkpoint_stored("chunk-1")
    await outbox.add([make_event(1), make_event(2)], checkpoint="chunk-1")
    await outbox.add([], checkpoint="chunk-2")  # a chunk whose rows were all rejected
    assert await outbox.checkpoint_stored("chunk-1")
    assert await outbox.checkpoint_stored("chunk-2")
    assert not await outbox.checkpoint_stored("chunk-3")
    claimed = await outbox.claim(10, time.time() + 1)
    assert sorted(c.event_id for c in claimed) == [make_event(1).event_id, make_event(2).event_id]


async def test_a_failed_write_stores_no_checkpoint(tmp_path: Path) -> None:
    outbox = SqliteOutbox(str(tmp_path / "outbox.sqlite3"))
    await outbox.open()
    try:
        await outbox._db.statement(lambda conn: conn.execute("PRAGMA max_page_count = 1"))
        with pytest.raises(Exception, match="outbox"):
            await outbox.add([make_event(n) for n in range(200)], checkpoint="chunk-1")
        await outbox._db.statement(lambda conn: conn.execute("PRAGMA max_page_count = 1000000"))
        assert not await outbox.checkpoint_stored("chunk-1")
        assert await outbox.claim(10, time.time() + 1) == []
    finally:
        await outbox.close()
