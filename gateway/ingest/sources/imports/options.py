"""An import's options, checked once for the command and the upload alike.

`ImportOptions.from_params` reads them from the upload's query parameters or the command's
arguments (already typed), with the `[imports]` settings as defaults; any bad one is an
EventError naming the parameter, which the upload answers as 400 JSON and the command as a
usage error. The pixel is left to the importer, which resolves it in the pixel table now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.core.currencies import currency as accepted_currency
from gateway.core.errors import EventError
from gateway.ingest.sources.imports.columns import parse_mapping
from gateway.ingest.sources.imports.readers import FORMATS
from gateway.settings import PixelConfig, Settings
from gateway.settings.sections import MAX_IMPORT_AGE_DAYS

CHUNK_ROWS = 1000
"""Rows per chunk: one transaction (one fsync) per Events API batch's worth of rows."""
PARAMS = frozenset(
    {
        "pixel", "event", "map", "currency", "limited_data_use", "test_event_code", "group_by",
        "format", "max_age_days", "dry_run", "resume",
    }
)  # fmt: skip
_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "": False}


@dataclass(frozen=True)
class ImportOptions:
    pixel: str | None = None
    event: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    currency: str | None = "USD"
    limited_data_use: bool = False
    test_event_code: str | None = None
    group_by_order: bool = False
    dry_run: bool = False
    resume: bool = False
    file_format: str = "auto"
    max_age_days: int = MAX_IMPORT_AGE_DAYS
    chunk_rows: int = CHUNK_ROWS
    jobs: int = 1
    """Processes parsing chunks (the import command: one per core); not in the fingerprint,
    so an import resumes with any number."""

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], settings: Settings, *, jobs: int = 1
    ) -> ImportOptions:
        """The options `params` give (strings, or the command's typed values; None or ""
        for one not given); raises EventError naming the first bad or unknown one."""
        unknown = sorted(set(params) - PARAMS)
        if unknown:
            raise EventError(unknown[0], f"unknown option ({', '.join(sorted(PARAMS))})")
        given = {name: value for name, value in params.items() if value not in (None, "")}
        defaults = settings.imports
        group_by = given.get("group_by")
        if group_by not in (None, "order_id"):
            raise EventError("group_by", "must be order_id")
        file_format = given.get("format", "auto")
        if file_format not in FORMATS:
            raise EventError("format", f"must be one of {', '.join(FORMATS)}")
        return cls(
            pixel=given.get("pixel"),
            event=given.get("event"),
            mapping=_mapping(given.get("map", [])),
            currency=_currency(given.get("currency")) or defaults.default_currency,
            limited_data_use=_flag(given, "limited_data_use"),
            test_event_code=given.get("test_event_code"),
            group_by_order=group_by == "order_id",
            dry_run=_flag(given, "dry_run"),
            resume=_flag(given, "resume"),
            file_format=file_format,
            max_age_days=_days(given.get("max_age_days", defaults.max_event_age_days)),
            chunk_rows=defaults.chunk_rows,
            jobs=jobs,
        )

    def fingerprint_seed(self, pixel: PixelConfig) -> bytes:
        """Everything that changes what a row becomes: a chunk imported with other options
        is another chunk."""
        return orjson.dumps(
            [
                pixel.id,
                self.event,
                sorted(self.mapping.items()),
                self.currency,
                self.limited_data_use,
                self.test_event_code,
                self.group_by_order,
                self.chunk_rows,
            ]
        )


def _mapping(pairs: str | list[str]) -> dict[str, str]:
    try:
        return parse_mapping([pairs] if isinstance(pairs, str) else pairs)
    except ValueError as exc:
        raise EventError("map", str(exc).removeprefix("--map ")) from None


def _currency(code: str | None) -> str | None:
    """A code TikTok accepts (the list postback rules are checked against too), or None."""
    if code is None or not code.strip():
        return None
    known = accepted_currency(code)
    if known is None:
        raise EventError("currency", "must be an ISO 4217 code TikTok accepts, such as EUR")
    return known


def _days(days: int | str) -> int:
    text = str(days).strip()
    digits = text.isascii() and text.isdigit() and len(text) < 10  # int("²") fails
    if not digits or not 1 <= int(text) <= MAX_IMPORT_AGE_DAYS:
        raise EventError("max_age_days", f"must be a whole number from 1 to {MAX_IMPORT_AGE_DAYS}")
    return int(text)


def _flag(given: Mapping[str, Any], name: str) -> bool:
    value = given.get(name, False)
    flag = value if isinstance(value, bool) else _FLAGS.get(str(value).strip().lower())
    if flag is None:
        raise EventError(name, "must be true or false")
    return flag
