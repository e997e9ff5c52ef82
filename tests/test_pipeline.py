"""The ingest path's entries: all or nothing, each on its own, and no side door past hooks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from gateway.core.errors import EventError
from gateway.core.event import Event
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.policy import SERVER, Item, SourcePolicy
from gateway.storage.backend import open_backend
from gateway.storage.outbox.sqlite import SqliteOutbox
from gateway.telemetry.metrics import Metrics
from tests.conftest import SettingsFactory, make_event

PAGE = {"url": "https://shop.example/thanks"}
GOOD = {"event": "Purchase", "event_id": "o-1", "user": {"email": "a@example.com"}, "page": PAGE}
BAD = {"event": "Purchase", "event_id": "o-2", "properties": {"value": "lots"}, "page": PAGE}


@pytest.fixture
async def pipeline(make_settings: SettingsFactory, tmp_path: Path) -> AsyncIterator[Pipeline]:
    settings = make_settings(outbox={"url": f"sqlite:///{tmp_path / 'outbox.sqlite3'}"})
    backend = open_backend(settings.outbox)
    await backend.outbox.open()
    try:
        yield Pipeline(settings, backend.outbox, Metrics())
    finally:
        await backend.close()


def _items(pipeline: Pipeline, *raws: dict[str, object]) -> list[Item]:
    return [Item(raw, pipeline.pixel(None)) for raw in raws]


async def _stored(pipeline: Pipeline) -> int:
    return (await pipeline.outbox.counts(0)).pending


@pytest.mark.anyio
async def test_ingest_is_all_or_nothing(pipeline: Pipeline) -> None:
    seen: list[Sequence[Event]] = []
    pipeline.on_accept(lambda events, policy: seen.append(events))
    with pytest.raises(EventError) as refused:
        await pipeline.ingest(_items(pipeline, GOOD, BAD), SERVER, indexed="events")
    assert refused.value.field == "events[1].properties.value"
    assert await _stored(pipeline) == 0 and seen == []
    await pipeline.ingest(_items(pipeline, GOOD), SERVER)
    assert await _stored(pipeline) == 1 and len(seen) == 1


@pytest.mark.anyio
async def test_ingest_each_stores_the_good_groups_and_returns_the_errors(
    pipeline: Pipeline,
) -> None:
    seen: list[tuple[int, SourcePolicy]] = []
    pipeline.on_accept(lambda events, policy: seen.append((len(events), policy)))
    groups = [
        _items(pipeline, GOOD),
        _items(pipeline, BAD),
        _items(pipeline, {**GOOD, "event_id": "o-3"}),
    ]
    dry = await pipeline.ingest_each(groups, SERVER, store=False)
    assert [type(r).__name__ for r in dry] == ["list", "EventError", "list"]
    assert await _stored(pipeline) == 0 and seen == []
    results = await pipeline.ingest_each(groups, SERVER)
    assert isinstance(results[1], EventError) and results[1].field == "properties.value"
    assert await _stored(pipeline) == 2
    assert seen == [(2, SERVER)]  # one write, one call of each hook


@pytest.mark.anyio
async def test_prepared_events_never_pass_an_accept_hook_unseen(pipeline: Pipeline) -> None:
    prepared = SqliteOutbox.prepare([make_event(1)])
    await pipeline.store_parsed(prepared, SERVER, checkpoint="chunk-1")  # no hooks: stored
    assert await _stored(pipeline) == 1
    pipeline.on_accept(lambda events, policy: None)
    with pytest.raises(AssertionError, match="bypass the accept hooks"):
        await pipeline.store_parsed(SqliteOutbox.prepare([make_event(2)]), SERVER, checkpoint="c2")
    assert await _stored(pipeline) == 1
