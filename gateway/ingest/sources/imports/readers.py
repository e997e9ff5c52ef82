"""Reading an export into rows: CSV (sniffed), TSV or JSON Lines, each maybe gzip-compressed.

Files come from CRMs, point-of-sale systems and warehouses, each with its own habits: a BOM
(Excel), semicolons (European locales), tabs, quoted fields spanning lines, gzip. The format
is read from the bytes, not trusted from the name, so `-` (standard input) works the same.
Rows are yielded one at a time with the line they start on, so memory stays flat whatever
the file's size; a malformed line becomes a `RowError` and the rows after it still come.
Each row also carries its raw text, which the importer fingerprints for `--resume`.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, cast

import orjson

_GZIP_MAGIC = b"\x1f\x8b"
_SNIFF_BYTES = 64 * 1024
_DELIMITERS = ",;\t|"
FORMATS = ("auto", "csv", "tsv", "jsonl")
csv.field_size_limit(1_048_576)  # one field of a CRM's notes may be long; a MiB is plenty
MAX_LINE = 4 * 1_048_576
"""Characters in one line at most: a longer one is no record (a gzip of one endless line)."""
MAX_DECOMPRESSED = 4 * 1024**3
"""Bytes a gzip may decompress to: a bomb stops here, not when the memory or the hour does."""


@dataclass(slots=True)
class Row:
    """One record: the line it starts on, its values by column, and its text (fingerprint)."""

    line: int
    values: dict[str, Any]
    text: str


@dataclass(slots=True)
class RowError:
    """A line that is not a record; `reason` never quotes the line (it may hold identifiers)."""

    line: int
    reason: str
    text: str


class UnreadableFile(ValueError):
    """The input is not a CSV, TSV or JSON Lines file we can read at all (no header…)."""


def open_binary(path: str) -> IO[bytes]:
    """The file at `path`, or standard input for `-`, decompressed when it is gzip."""
    raw: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    return decompressed(raw)


def decompressed(raw: IO[bytes]) -> IO[bytes]:
    buffered: Any = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(cast(Any, raw))
    if buffered.peek(2)[:2] == _GZIP_MAGIC:
        unzipped = _Gzip(fileobj=buffered, mode="rb")
        unzipped.myfileobj = buffered  # closed with it, as when GzipFile opens a file itself
        return cast(IO[bytes], unzipped)
    return cast(IO[bytes], buffered)


@contextlib.contextmanager
def _damaged_gzip() -> Iterator[None]:
    try:
        yield
    except (EOFError, gzip.BadGzipFile, zlib.error):
        raise UnreadableFile("the gzip data is truncated or damaged") from None


class _Gzip(gzip.GzipFile):
    """A truncated or damaged gzip is the sender's fault (`UnreadableFile`: 400), not a 500;
    so is one that decompresses past MAX_DECOMPRESSED."""

    _given = 0

    def _counted(self, data: bytes) -> bytes:
        self._given += len(data)
        if self._given > MAX_DECOMPRESSED:
            raise UnreadableFile(
                f"the gzip data decompresses to more than {MAX_DECOMPRESSED} bytes"
            )
        return data

    def read(self, size: int | None = -1) -> bytes:
        with _damaged_gzip():
            return self._counted(super().read(size))

    def read1(self, size: int = -1) -> bytes:
        with _damaged_gzip():
            return self._counted(super().read1(size))

    def readline(self, size: int | None = -1) -> bytes:
        with _damaged_gzip():
            return self._counted(super().readline(size))

    def peek(self, n: int) -> bytes:
        with _damaged_gzip():
            return super().peek(n)


class _Lines:
    """The text stream's lines (the sniffed sample first), each also kept for the current
    record's fingerprint."""

    def __init__(self, stream: IO[str], sample: str) -> None:
        self._stream = stream
        self._sample: io.StringIO | None = io.StringIO(sample, newline="")
        self.kept: list[str] = []
        self.line = 0
        self._again: list[str] = []
        """Lines to read again (reversed): those a runaway quote had swallowed."""

    def read_again(self, lines: list[str], line: int) -> None:
        self._again.extend(reversed(lines))
        self.line = line

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._again:
            text = self._again.pop()
        elif self._sample is not None:
            text = self._sample.readline()
            if not text.endswith(("\n", "\r")):  # the sample's last, partial line
                self._sample = None
                text += self._stream.readline(MAX_LINE + 1)
        else:
            text = self._stream.readline(MAX_LINE + 1)
        if not text:
            raise StopIteration
        if len(text) > MAX_LINE:
            raise UnreadableFile(f"line {self.line + 1} is longer than {MAX_LINE} characters")
        self.line += 1
        self.kept.append(text)
        return text


def read_rows(
    binary: IO[bytes], file_format: str = "auto"
) -> tuple[list[str], Iterator[Row | RowError]]:
    """(columns, rows) of the stream; columns are the header's names as written
    (JSON Lines: none, each object names its own)."""
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="strict", newline="")
    try:
        sample = text.read(_SNIFF_BYTES)
    except UnicodeDecodeError:
        text.detach()
        raise UnreadableFile("not UTF-8 text (export it as UTF-8)") from None
    if file_format == "auto":
        file_format = "jsonl" if sample.lstrip().startswith("{") else "csv"
    if file_format == "jsonl":
        return [], _detaching(text, _json_lines(_Lines(text, sample)))
    try:
        header, reader, lines = _csv_header(text, sample, file_format)
    except UnreadableFile:
        text.detach()
        raise
    return header, _detaching(text, _csv_rows(reader, lines, header))


def _detaching(text: io.TextIOWrapper, rows: Iterator[Row | RowError]) -> Iterator[Row | RowError]:
    """The rows, then the text layer detached: the caller owns (and closes) the file."""
    try:
        yield from rows
    finally:
        with contextlib.suppress(ValueError):  # the caller closed the file already
            text.detach()


def _csv_header(text: IO[str], sample: str, file_format: str) -> tuple[list[str], Any, _Lines]:
    lines = _Lines(text, sample)
    dialect = _dialect(sample, tab=file_format == "tsv")
    reader = csv.reader(lines, dialect)
    try:
        header = next(reader)
    except StopIteration:
        raise UnreadableFile("the file is empty") from None
    except csv.Error:
        raise UnreadableFile("the header line is not valid CSV") from None
    except UnicodeDecodeError:
        raise UnreadableFile("not UTF-8 text (export it as UTF-8)") from None
    if not any(name.strip() for name in header):
        raise UnreadableFile("the first line is not a header naming the columns")
    lines.kept.clear()
    return header, reader, lines


def _dialect(sample: str, *, tab: bool) -> type[csv.Dialect] | csv.Dialect:
    """The header line's delimiter (names rarely hold one, while rows with free text or a
    missing field fool `csv.Sniffer`); the sniffer only where the header tells nothing."""
    if tab:
        return csv.excel_tab
    header = next(csv.reader([sample.split("\n", 1)[0]]), [""])
    line = sample.split("\n", 1)[0]
    counts = {d: line.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    if counts[best] and header:
        return _with_delimiter(best)
    head = sample[: sample.rfind("\n") + 1] or sample  # whole lines only
    try:
        return csv.Sniffer().sniff(head, delimiters=_DELIMITERS)
    except csv.Error:
        return csv.excel


def _with_delimiter(delimiter: str) -> type[csv.Dialect]:
    class Sniffed(csv.excel):
        pass

    Sniffed.delimiter = delimiter
    return Sniffed


def _csv_rows(reader: Any, lines: _Lines, header: list[str]) -> Iterator[Row | RowError]:
    width = len(header)
    while True:
        start = lines.line + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield RowError(start, "not valid CSV (a quote is not closed?)", _taken(lines))
            continue
        except UnicodeDecodeError:
            yield RowError(start, "not UTF-8 text", _taken(lines))
            return
        if len(values) != width and len(lines.kept) > 1:
            # a quote left open swallowed the lines after it: report its line, read the
            # others again as the records they are
            first, *rest = lines.kept
            lines.kept.clear()
            lines.read_again(rest, start)
            yield RowError(start, "a quoted field is not closed", first)
            continue
        text = _taken(lines)
        if not values or (len(values) == 1 and not values[0].strip()):
            continue  # a blank line
        if len(values) > width and not any(v.strip() for v in values[width:]):
            del values[width:]  # trailing delimiters, as some exports write on data lines
        if len(values) != width:
            yield RowError(start, f"has {len(values)} fields, the header has {width}", text)
            continue
        yield Row(start, dict(zip(header, values, strict=True)), text)


def _taken(lines: _Lines) -> str:
    text = "".join(lines.kept)
    lines.kept.clear()
    return text


def _json_lines(lines: _Lines) -> Iterator[Row | RowError]:
    try:
        for text in lines:
            lines.kept.clear()
            if not text.strip():
                continue
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                yield RowError(lines.line, "not valid JSON", text)
                continue
            if not isinstance(value, dict):
                yield RowError(lines.line, "not a JSON object", text)
                continue
            yield Row(lines.line, value, text)
    except UnicodeDecodeError:
        yield RowError(lines.line + 1, "not UTF-8 text", "")
