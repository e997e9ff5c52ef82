"""Progress of a long command: a bar redrawn in place on a terminal, plain lines elsewhere
(a log file or CI keeps one line every few seconds, not a thousand carriage returns)."""

from __future__ import annotations

import time
from typing import IO

from gateway.ingest.sources.imports.summary import Summary

_PLAIN_EVERY_SECONDS = 5.0
_BAR_EVERY_SECONDS = 0.1
_WIDTH = 24


class ImportProgress:
    def __init__(self, stream: IO[str], *, total_bytes: int | None, tty: bool) -> None:
        self._stream = stream
        self._total = total_bytes
        self._tty = tty
        self._last = 0.0
        self._shown = False

    def __call__(self, summary: Summary, done_bytes: int | None = None) -> None:
        now = time.monotonic()
        every = _BAR_EVERY_SECONDS if self._tty else _PLAIN_EVERY_SECONDS
        if now - self._last < every:
            return
        self._last = now
        rate = summary.rows / summary.elapsed_seconds if summary.elapsed_seconds else 0.0
        share = done_bytes / self._total if done_bytes is not None and self._total else None
        eta = ""
        if share and 0 < share < 1 and summary.elapsed_seconds:
            eta = f", ETA {summary.elapsed_seconds * (1 - share) / share:.0f} s"
        text = f"{summary.rows:,} rows, {rate:,.0f} rows/s{eta}, {summary.rejected_rows:,} rejected"
        if self._tty:
            filled = int(_WIDTH * share) if share is not None else 0
            bar = f"[{'#' * filled}{'.' * (_WIDTH - filled)}] " if share is not None else ""
            self._stream.write(f"\r{bar}{text}\x1b[K")
            self._shown = True
        else:
            self._stream.write(f"progress: {text}\n")
        self._stream.flush()

    def close(self) -> None:
        if self._tty and self._shown:
            self._stream.write("\n")
            self._stream.flush()
