"""An import's chunks parsed in the importing process or in worker processes.

Chunks are parsed by the shared parser (`pipeline.parse_each`), the same rules wherever it
runs. With `--jobs N` (N > 1) workers parse and send each chunk back serialised as the outbox
stores it (`Outbox.prepare`); the importing process keeps what must stay in file order
(reading, fingerprints, the lead-context lookup, storing). Workers are spawned, not forked,
get what parsing needs once (never an access token), ignore Ctrl-C, and exit with the pool or
when the importer dies. Why: docs/design/imports.md.
"""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gateway.core.errors import EventError
from gateway.core.event import Event
from gateway.ingest.parser import Parsed, ParseRules
from gateway.ingest.pipeline import parse_each
from gateway.ingest.policy import Item, Observed, SourcePolicy
from gateway.ingest.sources.imports.columns import Columns
from gateway.ingest.sources.imports.rules import missing_identity
from gateway.ingest.sources.imports.summary import Rejection, coverage_of
from gateway.settings import PixelConfig, Secret
from gateway.storage.outbox import Prepared

Rows = list[tuple[int, dict[str, Any], Observed | None]]
"""A chunk's input events: (first line in the file, input event, lead context)."""


@dataclass(slots=True)
class ParsedChunk:
    """A chunk's events (in this process) or their stored form (from a worker), the rows
    refused, and what parsing left out or scrubbed (for the metrics)."""

    count: int
    events: list[Event] | None
    prepared: Prepared | None
    rejections: list[Rejection]
    left_out: int
    scrubbed: list[str]
    coverage: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class ChunkParser:
    """Everything parsing a chunk needs, picklable; `prepare` set: return stored form."""

    pixel: PixelConfig
    rules: ParseRules
    policy: SourcePolicy
    columns: Columns
    test_event_code: str | None
    prepare: Callable[[Sequence[Event]], Prepared] | None = None

    def for_workers(self, prepare: Callable[[Sequence[Event]], Prepared]) -> ChunkParser:
        """This parser as sent to worker processes: serialising, and without the token."""
        pixel = dataclasses.replace(self.pixel, access_token=Secret("", source="worker"))
        return dataclasses.replace(self, pixel=pixel, prepare=prepare)

    def __call__(self, rows: Rows, now: float) -> ParsedChunk:
        code = self.test_event_code
        items = [Item(raw, self.pixel, observed, test_event_code=code) for _, raw, observed in rows]
        rejections: list[Rejection] = []
        events: list[Event] = []
        left_out = 0
        scrubbed: list[str] = []
        for (line, _, _), result in zip(
            rows, parse_each(items, self.rules, self.policy, now), strict=True
        ):
            if isinstance(result, EventError):
                where = self.columns.where(result.field)
                rejections.append(Rejection(line, where, result.message))
                continue
            left_out += len(result.warnings)
            scrubbed.extend(result.scrubbed)
            reason = _unmatched(result)
            if reason is not None:
                rejections.append(Rejection(line, self.columns.column("email"), reason))
                continue
            events.extend(result.events)
        coverage = coverage_of(events)
        if self.prepare is None:
            return ParsedChunk(len(events), events, None, rejections, left_out, scrubbed, coverage)
        prepared = self.prepare(events)
        return ParsedChunk(len(events), None, prepared, rejections, left_out, scrubbed, coverage)


def _unmatched(parsed: Parsed) -> str | None:
    reason = missing_identity(parsed.events[0]) if parsed.events else None
    if reason is not None and parsed.warnings:
        reason += " (a phone was not a phone number)"
    return reason


def worker_pool(parser: ChunkParser, jobs: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(parser, os.getpid()),
    )


_parser: ChunkParser | None = None
_PARENT_CHECK_SECONDS = 0.5


def _start_worker(parser: ChunkParser, parent: int) -> None:
    global _parser
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the importing process's call
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()
    gc.freeze()  # as the import command does: the parser's static heap, out of GC's sight
    _parser = parser


def _exit_with(parent: int) -> None:
    """End this worker once the importing process is gone (`kill -9`): a worker blocked on
    its queue would not notice, as its siblings hold the queue's other end open."""
    while os.getppid() == parent:
        time.sleep(_PARENT_CHECK_SECONDS)
    os._exit(0)


def parse_in_worker(rows: Rows, now: float) -> ParsedChunk:
    assert _parser is not None, "a worker parses only after its start"
    return _parser(rows, now)
