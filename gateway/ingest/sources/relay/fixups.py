"""What the relay changes on the way through, counted per kind for `/metrics`.

Integrations written against TikTok often send what TikTok refuses or matches poorly: raw
identifiers, numeric event ids, millisecond or ISO times, 1.0 bodies, more than 1,000 events
at once. The shared parser fixes each of these; this module only recognises them in the
input (cheaply, without normalising anything) so an operator can see what the senders would
have got wrong. Counts are added only for requests that were stored.
"""

from __future__ import annotations

import re
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
    "unknown_field_ignored",
)
_HEX64 = re.compile(r"\s*[A-Fa-f0-9]{64}\s*")
_IDENTIFIER_KEYS = frozenset(
    {"email", "emails", "phone", "phone_number", "phones", "external_id", "external_ids"}
)
_MILLISECONDS_FROM = 100_000_000_000  # as core/normalize.py: seconds this large are year 5138


def count_fixups(events: Iterable[Any], *, legacy: bool) -> dict[str, int]:
    """The fix-ups these (2.0-form, still unparsed) events need, by kind (kinds seen only).

    Runs on every relayed request, so it is written for speed: plain local counts, only
    the identifier keys present visited, the digest pattern tried only on text long
    enough to be a digest."""
    raw = digests = numbers = milliseconds = iso = legacy_names = total = 0
    for event in events:
        total += 1
        if not isinstance(event, dict):
            continue
        user = event.get("user")
        if isinstance(user, dict):
            for key in _IDENTIFIER_KEYS.intersection(user):
                value = user[key]
                for item in value if isinstance(value, list) else (value,):
                    if isinstance(item, str):
                        if len(item) >= 64 and _HEX64.fullmatch(item):
                            digests += 1
                        elif item.strip():
                            raw += 1
                    elif isinstance(item, int) and not isinstance(item, bool):
                        raw += 1
        event_id = event.get("event_id")
        if isinstance(event_id, int | float) and not isinstance(event_id, bool):
            numbers += 1
        at = event.get("event_time")
        if isinstance(at, str):
            text = at.strip()
            if not (text.isascii() and text.isdigit() and len(text) < 20):
                iso += 1
            elif int(text) >= _MILLISECONDS_FROM:
                milliseconds += 1
        elif isinstance(at, int | float) and not isinstance(at, bool) and at >= _MILLISECONDS_FROM:
            milliseconds += 1
        name = event.get("event")
        if isinstance(name, str) and name.strip() in LEGACY_EVENTS:
            legacy_names += 1
    counts = {
        "raw_identifier_hashed": raw,
        "digest_passed_through": digests,
        "event_id_number": numbers,
        "time_milliseconds": milliseconds,
        "time_iso": iso,
        "legacy_event_name": legacy_names,
        "translated_from_1_0": total if legacy else 0,
        "split_over_1000": int(total > MAX_BATCH),
    }
    return {kind: count for kind, count in counts.items() if count}
