"""What the relay changes on the way through, counted per kind for `/metrics`.

Integrations written against TikTok often send what TikTok refuses or matches poorly: raw
identifiers, numeric event ids, millisecond or ISO times, 1.0 bodies, more than 1,000 events
at once. The shared parser fixes each of these; this module only recognises them in the
input (cheaply, without normalising anything) so an operator can see what the senders would
have got wrong. Counts are added only for requests that were stored.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from gateway.core.event import MAX_BATCH
from gateway.core.event_names import LEGACY_EVENTS

KINDS = (
    "raw_identifier_hashed",
    "digest_passed_through",
    "event_id_number",
    "time_milliseconds",
    "time_iso",
    "legacy_event_name",
    "translated_from_1_0",
    "split_over_1000",
)
_HEX64 = re.compile(r"\s*[A-Fa-f0-9]{64}\s*")
_IDENTIFIER_KEYS = (
    "email",
    "emails",
    "phone",
    "phone_number",
    "phones",
    "external_id",
    "external_ids",
)
_MILLISECONDS_FROM = 100_000_000_000  # as core/normalize.py: seconds this large are year 5138


def _identifiers(user: dict[str, Any], counts: Counter[str]) -> None:
    for key in _IDENTIFIER_KEYS:
        value = user.get(key)
        if value is None:
            continue
        for item in value if isinstance(value, list) else (value,):
            if isinstance(item, str) and item.strip():
                digest = _HEX64.fullmatch(item)
                counts["digest_passed_through" if digest else "raw_identifier_hashed"] += 1
            elif isinstance(item, int) and not isinstance(item, bool):
                counts["raw_identifier_hashed"] += 1


def _time(raw: Any, counts: Counter[str]) -> None:
    if isinstance(raw, bool) or raw is None:
        return
    if isinstance(raw, int | float):
        if raw >= _MILLISECONDS_FROM:
            counts["time_milliseconds"] += 1
    elif isinstance(raw, str):
        text = raw.strip()
        if text.isdigit():
            if int(text) >= _MILLISECONDS_FROM:
                counts["time_milliseconds"] += 1
        else:
            counts["time_iso"] += 1


def count_fixups(events: Iterable[Any], *, legacy: bool) -> Counter[str]:
    """The fix-ups these (2.0-form, still unparsed) events need, by kind."""
    counts: Counter[str] = Counter()
    total = 0
    for event in events:
        total += 1
        if not isinstance(event, dict):
            continue
        user = event.get("user")
        if isinstance(user, dict):
            _identifiers(user, counts)
        event_id = event.get("event_id")
        if isinstance(event_id, int | float) and not isinstance(event_id, bool):
            counts["event_id_number"] += 1
        _time(event.get("event_time"), counts)
        name = event.get("event")
        if isinstance(name, str) and name.strip() in LEGACY_EVENTS:
            counts["legacy_event_name"] += 1
    if legacy:
        counts["translated_from_1_0"] += total
    if total > MAX_BATCH:
        counts["split_over_1000"] += 1
    return counts
