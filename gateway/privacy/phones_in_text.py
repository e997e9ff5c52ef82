"""Finding what looks like a phone number in free text, by its written shape.

Order numbers, SKUs, EANs, dates and prices are digit strings too, so the rule is how people
*write* phone numbers: international (`+` and 8–15 digits, grouped or not), `tel:` (5+
digits), and, where `national=True` (prose and query values), 9–15 digits in 3+ groups split
by one kind of separator. What is not a phone, and why: docs/design/phone-numbers.md.
Candidates come from one linear regular expression; each run of 8+ such characters spends a
unit of the event's `ScanBudget`.
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
        run = text[start + len(prefix) : end]
        if not _unmistakable(prefix, run) and (
            before.isalnum() or before == "_" or after.isalnum() or after == "_"
        ):
            continue  # part of a word or a code
        if _looks_like_a_phone(prefix, run, national=national, after=after, before=before):
            spans.append((start, end))
    return spans


def _unmistakable(prefix: str, run: str) -> bool:
    """`+` and a number written as one (spaced, or 10+ digits) is a phone even glued to a
    word (`a+44 20 7946 0958b`): no code or token holds that shape by chance."""
    if not prefix.startswith("+"):
        return False
    return " " in run or "(" in run or sum(c.isdigit() for c in run) >= 10


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
