"""Finding email addresses in free text in linear time, to keep them out of what TikTok
receives unhashed (page URLs, properties) and out of the disk.

Each `@` is looked at once; the local part and the domain grow from it by anchored matches of
bounded length (64 and 253), so crafted input cannot make it backtrack. Any script counts and
no top-level domain is needed (`john@localhost`). A `ScanBudget` spans one event: each `@`,
phone candidate and 256 characters of text spend a unit; past it the caller replaces the
text whole. Why: docs/design/scrubbing.md.
"""

from __future__ import annotations

import re

REPLACEMENT = "redacted"
# no / ? & = # in a local part: they are URL syntax around an address, not part of it.
# The local part is matched on the reversed text before the `@`, so the scan stays anchored.
_LOCAL_REVERSED = re.compile(r"[\w.!$%'*+^`{|}~-]{1,64}")
_DOMAIN = re.compile(r"[^\W_][\w.-]{0,252}")
_LETTER = re.compile(r"[^\W\d_]")


class OverBudget(Exception):
    """An event asked for more scanning than its budget: its remaining texts go whole."""


class ScanBudget:
    """Units of scanning one event may still spend (each `@`, each candidate number…)."""

    __slots__ = ("left",)

    def __init__(self, units: int) -> None:
        self.left = units

    def spend(self, units: int = 1) -> None:
        self.left -= units
        if self.left < 0:
            raise OverBudget


def email_spans(text: str, budget: ScanBudget | None = None) -> list[tuple[int, int]]:
    """(start, end) of each email address in `text`, in order, never overlapping.

    Raises OverBudget when `budget` runs out."""
    spans: list[tuple[int, int]] = []
    floor = 0  # the local part of the next address starts after the previous one
    at = text.find("@")
    while at != -1:
        if budget is not None:
            budget.spend()
        local = _LOCAL_REVERSED.match(text[max(floor, at - 64) : at][::-1])
        domain = _DOMAIN.match(text, at + 1)
        end = at + 1
        if local is not None and domain is not None:
            end = domain.end()
            while text[end - 1] in ".-":  # a sentence's full stop is not part of the domain
                end -= 1
            if _LETTER.search(text, at + 1, end):
                spans.append((at - local.end(), end))
                floor = end
        at = text.find("@", end)
    return spans


def scrub_emails(text: str) -> str:
    """`text` with every email address replaced by `redacted`."""
    if "@" not in text:
        return text
    return replace_spans(text, email_spans(text))


def replace_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with each (start, end) span replaced by `redacted`."""
    if not spans:
        return text
    pieces: list[str] = []
    last = 0
    for start, end in spans:
        pieces.append(text[last:start])
        pieces.append(REPLACEMENT)
        last = end
    pieces.append(text[last:])
    return "".join(pieces)
