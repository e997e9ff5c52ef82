"""What an import tells its user: counts, rejections by reason, match-key coverage, report.

The report and the summary name lines, columns and reasons, never a value: a rejected row's
email or phone stays in the user's file, not in ours.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from gateway.core.event import Event

COVERAGE_KEYS = ("email", "phone", "external_id", "ttclid", "ip_user_agent")


@dataclass(frozen=True, slots=True)
class Rejection:
    line: int
    field: str
    reason: str


@dataclass
class Summary:
    rows: int = 0
    """Records read (valid or not), including those a resume skipped."""
    events: int = 0
    """Events stored (with --dry-run: that would have been stored)."""
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(field, reason) → rows."""
    left_out: int = 0
    """Identifiers left out of stored events (phones that are not phone numbers)."""
    resumed_rows: int = 0
    """Rows of chunks an earlier run had stored (--resume): not read again."""
    chunks: int = 0
    context_filled: int = 0
    """Rows completed from the lead-context store (click id, browser context by lead)."""
    context_unread: str | None = None
    """Why the lead-context store was not read (None: it was, or there is none)."""
    ignored_columns: list[str] = field(default_factory=list)
    coverage: Counter[str] = field(default_factory=Counter)
    dry_run: bool = False
    elapsed_seconds: float = 0.0
    fingerprint: str = ""
    """The file's fingerprint (with the options): the key of its last chunk."""

    @property
    def rejected_rows(self) -> int:
        return sum(self.rejected.values())

    def counted(self, events: int, coverage: Counter[str]) -> None:
        """Stored (or, dry, checked) events and the match keys they carry."""
        self.events += events
        self.coverage.update(coverage)

    def to_json(self) -> dict[str, Any]:
        events = self.events or 1
        return {
            "rows": self.rows,
            "events": self.events,
            "stored": 0 if self.dry_run else self.events,
            "dry_run": self.dry_run,
            "rejected": self.rejected_rows,
            "rejected_by_reason": [
                {"field": f, "reason": r, "rows": n} for (f, r), n in self.rejected.most_common()
            ],
            "identifiers_left_out": self.left_out,
            "resumed_rows": self.resumed_rows,
            "chunks": self.chunks,
            "lead_context_filled": self.context_filled,
            "lead_context_unread": self.context_unread,
            "ignored_columns": self.ignored_columns,
            "match_key_coverage": {
                k: round(self.coverage[k] / events, 4) if self.events else 0.0
                for k in COVERAGE_KEYS
            },
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "fingerprint": self.fingerprint,
        }

    def to_text(self) -> str:
        data = self.to_json()
        verb = "would be stored (dry run)" if self.dry_run else "stored"
        lines = [
            f"rows read: {self.rows}",
            f"events {verb}: {self.events}",
            f"rejected rows: {self.rejected_rows}",
        ]
        lines += [f"  {n:>8}  {f}: {r}" for (f, r), n in self.rejected.most_common()]
        if self.resumed_rows:
            lines.append(f"rows already stored by an earlier run (resumed): {self.resumed_rows}")
        if self.left_out:
            lines.append(f"identifiers left out (not a phone number…): {self.left_out}")
        if self.context_filled:
            lines.append(f"rows completed from the lead context: {self.context_filled}")
        if self.context_unread:
            lines.append(f"lead context not read: {self.context_unread}")
        if self.ignored_columns:
            lines.append(f"columns ignored: {', '.join(self.ignored_columns)}")
        lines.append("match-key coverage of the events:")
        for key, share in data["match_key_coverage"].items():
            lines.append(
                f"  {key.replace('_', ' + ', 1) if key == 'ip_user_agent' else key}: {share:.0%}"
            )
        rate = self.rows / self.elapsed_seconds if self.elapsed_seconds else 0
        lines.append(f"time: {self.elapsed_seconds:.1f} s ({rate:,.0f} rows/s)")
        return "\n".join(lines)


def coverage_of(events: Sequence[Event]) -> Counter[str]:
    """How many of `events` carry each match key (the summary's coverage)."""
    coverage: Counter[str] = Counter()
    for event in events:
        user = event.user
        for key in ("email", "phone", "external_id", "ttclid"):
            if key in user:
                coverage[key] += 1
        if "ip" in user and "user_agent" in user:
            coverage["ip_user_agent"] += 1
    return coverage


class ReportWriter:
    """`--report PATH`: one CSV line per rejected row — line, field, reason."""

    def __init__(self, stream: IO[str]) -> None:
        self._writer = csv.writer(stream)
        self._writer.writerow(["line", "field", "reason"])
        self._stream = stream

    def write(self, rejections: list[Rejection]) -> None:
        self._writer.writerows((r.line, _cell(r.field), _cell(r.reason)) for r in rejections)
        self._stream.flush()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    """A cell a spreadsheet will not run: a leading formula character gets a `'` before it
    (OWASP's CSV injection advice); the file's column names reach the report as written."""
    return "'" + text if text.startswith(_FORMULA_START) else text
