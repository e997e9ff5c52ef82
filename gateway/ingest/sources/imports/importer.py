"""An import: rows in chunks through the one ingest path, each chunk stored before the next.

Each chunk's key, a SHA-256 chained over the import's options and every record so far, is
stored in ONE transaction with the chunk's events (`checkpoint=`): after a `kill -9` a chunk
is wholly stored or not at all, and `--resume` skips every chunk whose key is stored
(docs/design/imports.md). Rows become server-API input events (`columns.py`), get click ids
from the lead context by external id or order id (`LeadMemory.fill_items`), are parsed
(`chunks.py`) and stored through the pipeline, a chunk at a time in a worker thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from gateway.core.errors import EventError
from gateway.ingest.leads import LeadMemory
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.policy import Item, SourcePolicy
from gateway.ingest.sources.imports.chunks import (
    ChunkParser,
    ParsedChunk,
    Rows,
    parse_in_worker,
    worker_pool,
)
from gateway.ingest.sources.imports.columns import Columns, RowRules, merged, to_input
from gateway.ingest.sources.imports.options import ImportOptions
from gateway.ingest.sources.imports.readers import Row, RowError, read_rows
from gateway.ingest.sources.imports.rules import import_event_id
from gateway.ingest.sources.imports.summary import Rejection, Summary

IMPORT = SourcePolicy("import", event_id_from=import_event_id)
"""Rows are judged as server events, their missing ids derived as the CDP connectors do;
each import sets its own maximum age."""
IN_PROCESS_CHUNKS = 2
"""Chunks parsed in this process before worker processes start (small files never wait
for them)."""


MAX_ORDER_ROWS = 1_000
"""Rows of one order that --group-by order_id merges into one event, at most."""


@dataclass(slots=True)
class _Record:
    """One record read: its first line, its input event or why it has none, its text."""

    line: int
    raw: dict[str, Any] | None
    error: Rejection | None
    text: str


@dataclass(slots=True)
class _Chunk:
    records: list[_Record]
    key: str


_Parsing = tuple[str, list[Rejection], "asyncio.Future[ParsedChunk]"]
"""A chunk being parsed: its key, the records refused on reading, the parse."""
Progress = Callable[[Summary], None]
Report = Callable[[list[Rejection]], None]


class Importer:
    """One import of one file into the outbox (or nowhere, with `dry_run`)."""

    def __init__(
        self,
        pipeline: Pipeline,
        options: ImportOptions,
        *,
        report: Report | None = None,
        progress: Progress | None = None,
        leads: LeadMemory | None = None,
    ) -> None:
        """`leads`: the lead-context store, whose browser context completes rows that name
        a lead (by external id or order id); None when this process cannot read it."""
        self._pipeline = pipeline
        self._leads = leads
        self.options = options
        self.pixel = pipeline.pixel(options.pixel, field="pixel")
        self._columns = Columns(options.mapping)
        self._rules = RowRules(
            event=options.event,
            currency=options.currency,
            limited_data_use=options.limited_data_use and self.pixel.event_source == "web",
        )
        self._policy = dataclasses.replace(IMPORT, max_age_seconds=options.max_age_days * 86400)
        self._report = report
        self._progress = progress
        self.summary = Summary(dry_run=options.dry_run)
        self._jobs = max(1, options.jobs)
        self._parser = ChunkParser(
            self.pixel, pipeline.rules, self._policy, self._columns, options.test_event_code
        )

    async def run(self, binary: IO[bytes]) -> Summary:
        """Import every row of `binary`; raises EventError / UnreadableFile for a file that
        cannot be imported at all, OutboxUnavailable when storing fails (resume later)."""
        started = time.monotonic()
        header, rows = await asyncio.to_thread(read_rows, binary, self.options.file_format)
        self._check_header(header)
        chunks = self._chunks(rows)
        outbox = self._pipeline.outbox
        summary = self.summary
        # chunks being parsed, in file order: a task stores each as soon as it is parsed and
        # the one before it is stored (checkpoints in file order), while more are read; the
        # bound keeps a few chunks in memory, whatever the file's size
        parsing: asyncio.Queue[_Parsing | None] = asyncio.Queue(maxsize=self._jobs)
        storing = asyncio.create_task(self._store_in_order(parsing))
        pool: ProcessPoolExecutor | None = None
        try:
            while True:
                chunk = await asyncio.to_thread(next, chunks, None)
                if chunk is None:
                    break
                summary.chunks += 1
                summary.rows += len(chunk.records)
                summary.fingerprint = chunk.key
                if self.options.resume and await outbox.checkpoint_stored(chunk.key):
                    summary.resumed_rows += len(chunk.records)
                else:
                    if pool is None and self._use_workers(summary.chunks):
                        pool = worker_pool(self._parser.for_workers(outbox.prepare), self._jobs)
                    await _put(parsing, await self._parse(chunk, pool), storing)
                summary.elapsed_seconds = time.monotonic() - started
                if self._progress is not None:
                    self._progress(summary)
            await _put(parsing, None, storing)
            await storing
            if pool is not None:  # idle now: its workers exit at once
                await asyncio.to_thread(pool.shutdown)
        finally:
            storing.cancel()  # the writer finishes the transaction it holds, or not
            while not parsing.empty():
                left = parsing.get_nowait()
                if left is not None:
                    left[2].cancel()
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        summary.ignored_columns = list(self._columns.ignored)
        summary.elapsed_seconds = time.monotonic() - started
        return summary

    def _use_workers(self, chunks: int) -> bool:
        """Workers for a file of more than a few chunks: spawning them costs a second."""
        return self._jobs > 1 and chunks > IN_PROCESS_CHUNKS

    async def _parse(self, chunk: _Chunk, pool: ProcessPoolExecutor | None) -> _Parsing:
        """Start parsing a chunk (in a thread, or in a worker): its rows, with their lead
        context, and the records already refused."""
        inputs, rejections = await asyncio.to_thread(self._inputs, chunk)
        if self._leads is None:
            rows: Rows = [(line, raw, None) for line, raw in inputs]
        else:
            items = [Item(raw, self.pixel) for _, raw in inputs]
            self.summary.context_filled += await self._leads.fill_items(items)
            rows = [(line, i.raw, i.observed) for (line, _), i in zip(inputs, items, strict=True)]
        now = self._pipeline.now()
        future: asyncio.Future[ParsedChunk]
        if pool is None:
            future = asyncio.ensure_future(asyncio.to_thread(self._parser, rows, now))
        else:
            future = asyncio.get_running_loop().run_in_executor(pool, parse_in_worker, rows, now)
        return chunk.key, rejections, future

    async def _store_in_order(self, parsing: asyncio.Queue[_Parsing | None]) -> None:
        """Each chunk once parsed, in file order: stored (or, dry, counted), then reported."""
        while (entry := await parsing.get()) is not None:
            key, rejections, future = entry
            parsed = await future
            self._pipeline.count_parsed(parsed.left_out, parsed.scrubbed)
            self.summary.left_out += parsed.left_out
            if self.options.dry_run:
                self.summary.counted(parsed.count, parsed.coverage)
            else:
                await self._store(parsed, key)
            self._rejected(sorted(rejections + parsed.rejections, key=lambda r: r.line))

    async def _store(self, parsed: ParsedChunk, key: str) -> None:
        chunk = parsed.prepared if parsed.prepared is not None else parsed.events or []
        await self._pipeline.store_parsed(chunk, self._policy, checkpoint=key)
        self.summary.counted(parsed.count, parsed.coverage)

    def _check_header(self, header: list[str]) -> None:
        if not header:
            return  # JSON Lines: each object names its own fields
        targets = {self._columns.field(name) for name in header}
        if "event" not in targets and not self.options.event:
            raise EventError("event", "the file has no event column: pass --event NAME")
        if "timestamp" not in targets:
            raise EventError("timestamp", "the file has no timestamp column (or --map one)")

    def _rejected(self, rejections: list[Rejection]) -> None:
        for rejection in rejections:
            self.summary.rejected[(rejection.field, rejection.reason)] += 1
        if rejections and self._report is not None:
            self._report(rejections)

    # --- in the worker thread --------------------------------------------------------------

    def _chunks(self, rows: Iterator[Row | RowError]) -> Iterator[_Chunk]:
        """Chunks of `chunk_rows` records; with --group-by order_id a chunk never splits an
        order's consecutive lines."""
        chain = hashlib.sha256(self.options.fingerprint_seed(self.pixel)).digest()
        size = self.options.chunk_rows
        grouping = self.options.group_by_order
        records: list[_Record] = []
        run, order = 0, None  # consecutive records of one order
        for row in rows:
            record = self._record(row)
            if grouping:
                key = _order_key(record.raw)
                run, order = (run + 1 if key is not None and key == order else 1), key
                if run > MAX_ORDER_ROWS:  # one order cannot hold a chunk open forever
                    reason = f"more than {MAX_ORDER_ROWS} consecutive rows of one order"
                    error = Rejection(record.line, "order_id", reason)
                    record = _Record(record.line, None, error, record.text)
            if len(records) >= size and not (grouping and _same_order(records[-1], record)):
                chain = _chained(chain, records)
                yield _Chunk(records, chain.hex())
                records = []
            records.append(record)
        if records:
            yield _Chunk(records, _chained(chain, records).hex())

    def _record(self, row: Row | RowError) -> _Record:
        if isinstance(row, RowError):
            return _Record(row.line, None, Rejection(row.line, "line", row.reason), row.text)
        try:
            raw = to_input(row.values, self._columns, self._rules)
        except EventError as exc:
            where = self._columns.column(exc.field)
            return _Record(row.line, None, Rejection(row.line, where, exc.message), row.text)
        return _Record(row.line, raw, None, row.text)

    def _inputs(self, chunk: _Chunk) -> tuple[list[tuple[int, dict[str, Any]]], list[Rejection]]:
        """The chunk's input events (grouped by order with --group-by) at their first line,
        and the records that have none."""
        rejections: list[Rejection] = []
        inputs: list[tuple[int, dict[str, Any]]] = []
        for record in chunk.records:
            if record.error is not None:
                rejections.append(record.error)
            elif record.raw is not None:
                inputs.append((record.line, record.raw))
        if self.options.group_by_order:
            inputs = _grouped(inputs)
        return inputs, rejections


async def _put(
    parsing: asyncio.Queue[_Parsing | None], entry: _Parsing | None, storing: asyncio.Task[None]
) -> None:
    """Queue a chunk for storing; raises what stopped the storing task (the outbox went
    away) instead of waiting for room forever."""
    put = asyncio.ensure_future(parsing.put(entry))
    await asyncio.wait({put, storing}, return_when=asyncio.FIRST_COMPLETED)
    if not put.done():
        put.cancel()
        storing.result()  # raises its error
        raise RuntimeError("the storing task ended before the file did")
    if storing.done():
        storing.result()


def _chained(chain: bytes, records: list[_Record]) -> bytes:
    digest = hashlib.sha256(chain)
    digest.update("".join(r.text for r in records).encode("utf-8", "surrogatepass"))
    return digest.digest()


def _order_key(raw: dict[str, Any] | None) -> tuple[Any, Any] | None:
    if raw is None:
        return None
    order_id = raw.get("properties", {}).get("order_id")
    return None if order_id is None else (order_id, raw.get("event"))


def _same_order(last: _Record, record: _Record) -> bool:
    key = _order_key(last.raw)
    return key is not None and key == _order_key(record.raw)


def _grouped(inputs: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    """Consecutive rows of one order and event → one input event (reported at its first
    line); rows without an order id stay on their own."""
    out: list[tuple[int, dict[str, Any]]] = []
    group: list[dict[str, Any]] = []
    line = 0
    for row_line, raw in inputs:
        if group and _order_key(raw) is not None and _order_key(raw) == _order_key(group[0]):
            group.append(raw)
            continue
        if group:
            out.append((line, merged(group[0], group) if len(group) > 1 else group[0]))
        group, line = [raw], row_line
    if group:
        out.append((line, merged(group[0], group) if len(group) > 1 else group[0]))
    return out
