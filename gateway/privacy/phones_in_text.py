"""Finding what looks like a phone number in free text, by its written shape.

Order numbers, EANs, SKUs, timestamps and prices are digit strings too, and wrecking them
breaks catalogue matching and reporting, so the rule is about how people *write* phone
numbers rather than about digits alone:

- **international**: `+` then 8 to 15 digits, which may be grouped by spaces, `-`, `.` or a
  parenthesised group: `+1 213 373 4253`, `+44 (0)20 7946 0958`, `+4915112345678`. Order
  ids and SKUs do not start with `+`.
- **tel:**: `tel:` then at least 5 digits, however written.
- **national** (only where `national=True`: prose and URL query values, never identifiers
  nor URL paths): 9 to 15 digits in at least 3 groups split by one kind of separator (space,
  `-` or `.`), the first group possibly in parentheses: `(213) 373-4253`, `213-373-4253`,
  `0151 1234 5678`, `06 12 34 56 78`. Not a phone: an unbroken digit string
  (`4500123456789`), a date (8 digits), a date with a time (`2024-11-22 10:30`: a run
  followed by `:`), mixed separators (`22.11.2024 18`), a group of one digit after the
  first (ISBNs such as `978-3-16-148410-0`), four dotted groups of up to 3 digits (an IPv4
  address), a run glued to letters (`SKU-213-373-4253`). Two-group national numbers
  (`030 12345678`) are missed: they cannot be told from a quantity and a code.

A candidate is a run of digits and separators found by one regular expression without
nested repetition (linear), so the Python work is per run of 8+ such characters, and each
run spends a unit of the event's `ScanBudget`.
"""

from __future__ import annotations

import re

from gateway.privacy.scrub import ScanBudget

_RUN = re.compile(r"\d[\d ().-]{7,}")
_SEPARATORS = " ().-"
_JOINED_BEFORE = "-./"
_DIGITS = b"0123456789"


def might_hold_phone(text: str, *, national: bool) -> bool:
    """False when `text` surely holds no phone number (the cheap test of the common case:
    every form needs 5 digits, counted in C, where the regular expression costs ~15 ns a
    character)."""
    if not national and "+" not in text and ":" not in text:
        return False
    if text.isascii() and len(text) - len(text.encode().translate(None, _DIGITS)) < 5:
        return False
    return _RUN.search(text) is not None


def phone_spans(
    text: str, *, national: bool, budget: ScanBudget | None = None
) -> list[tuple[int, int]]:
    """(start, end) of each phone-looking number in `text` (OverBudget past `budget`)."""
    spans: list[tuple[int, int]] = []
    for match in _RUN.finditer(text):
        if budget is not None:
            budget.spend()
        start, end = match.start(), match.end()
        while text[end - 1] in _SEPARATORS:  # the run starts with a digit: this stops
            end -= 1
        prefix = _prefix(text, start)
        start -= len(prefix)
        before = text[start - 1] if start else " "
        after = text[end] if end < len(text) else " "
        if before.isalnum() or before == "_" or after.isalnum() or after == "_":
            continue  # part of a word or a code
        run = text[start + len(prefix) : end]
        if _looks_like_a_phone(prefix, run, national=national, after=after, before=before):
            spans.append((start, end))
    return spans


def _prefix(text: str, start: int) -> str:
    """What may stand before the first digit of a phone number: `+`, `(`, `+(`, `tel:`."""
    if text[max(0, start - 4) : start].lower() == "tel:":
        return text[start - 4 : start]
    if start and text[start - 1] == "(":
        return "+(" if start > 1 and text[start - 2] == "+" else "("
    return "+" if start and text[start - 1] == "+" else ""


def _looks_like_a_phone(prefix: str, run: str, *, national: bool, after: str, before: str) -> bool:
    digits = len(run) - sum(run.count(c) for c in _SEPARATORS)
    if prefix.lower() == "tel:":
        return digits >= 5
    if prefix.startswith("+"):
        return 8 <= digits <= 15
    if not national or after == ":" or before in _JOINED_BEFORE or not 9 <= digits <= 15:
        return False  # a time (`10:30`) or the tail of a code (`SKU-213-373-4253`)
    return _national_groups(prefix, run)


def _national_groups(prefix: str, run: str) -> bool:
    groups: list[str] = []
    if prefix == "(":
        area, close, run = run.partition(")")
        if not close or not area.isdigit():
            return False
        groups.append(area)
        run = run.lstrip(" ")
    separator = next((c for c in run if not c.isdigit()), "")
    if separator not in (" ", "-", "."):
        return False
    groups.extend(run.split(separator))
    if len(groups) < 3 or not all(g.isdigit() for g in groups):
        return False
    if any(len(g) < 2 for g in groups[1:]):
        return False
    return not (separator == "." and len(groups) == 4 and all(len(g) <= 3 for g in groups))
