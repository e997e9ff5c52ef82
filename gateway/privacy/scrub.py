"""Finding email addresses in free text in linear time, to keep them out of what TikTok
receives unhashed (page URLs, properties) and out of the disk.

A regular expression such as `[^@]+@[^@]+\\.[a-z]{2,}` backtracks on crafted input
(`a…a@a.a.a.…`: ~45 ms for 4 KB, and a request of 120 such events held the event loop for
10 s). This scanner looks at each `@` once and grows the local part leftwards and the domain
rightwards with anchored character-class matches of bounded length (64 and 253, the longest
an address may have): the work per `@` is bounded, whatever the input.

An address needs no top-level domain (`john@localhost`, intranet hosts), and letters of any
script count (`jürgen@beispiel.de`): the price is that `hello@world` is taken for an address
too, which in a page URL or a description is a price worth paying. A domain needs a letter,
so `2@10` (two at ten) is not an address.

A `ScanBudget` spans one event: each `@`, each candidate phone number (phones_in_text.py) and
each 256 characters of a long text spend a unit, and past the budget the caller replaces
the text whole, so no crafted event buys more than a bounded amount of scanning.
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
