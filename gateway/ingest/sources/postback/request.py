"""A postback's parameters, however they came, as our fields: a flat map of strings.

Lead systems fire a URL with macros filled in (GET with a query string), post the same as
a form (the LMS's "FORM" method), or post JSON. All three become one `dict[str, str]`;
then the source's renames apply (`payout` → `price`) and its value maps set the trigger
(`status=1` → `lead_sold`). Limits are checked as the input is read — the number of
fields, the length of names and values — and a fault is a 400 naming the parameter.
Parameters that steer the gateway itself (`key`, `dry_run`) are taken out first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from gateway.core.errors import EventError, UnsupportedMediaType
from gateway.settings import PostbackSource

MAX_FIELDS = 200
MAX_NAME = 128
MAX_VALUE = 2048
CONTROL = frozenset({"key", "dry_run"})
"""Parameters for the gateway, never fields: the source's secret, the dry-run flag."""


def query_fields(query: str) -> dict[str, str]:
    """`a=1&b=2` → fields; a repeated parameter keeps its first value."""
    try:
        pairs = parse_qsl(
            query, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="replace"
        )
    except ValueError:
        raise EventError("query", f"more than {MAX_FIELDS} parameters") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if not name.strip():  # "=x" from a macro the platform left empty: nothing to read
            continue
        _check(name, value)
        fields.setdefault(name.strip(), value.strip())
    return fields


def body_fields(media_type: str, body: bytes) -> dict[str, str]:
    """A form or a JSON object → fields (JSON numbers and booleans become their text)."""
    if media_type == "application/x-www-form-urlencoded":
        return query_fields(body.decode("utf-8", errors="replace"))
    if media_type != "application/json":
        raise UnsupportedMediaType("send a form (application/x-www-form-urlencoded) or JSON")
    if not body.strip():
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise EventError("body", "not valid JSON") from None
    if not isinstance(data, dict):
        raise EventError("body", "must be a JSON object of fields")
    if len(data) > MAX_FIELDS:
        raise EventError("body", f"more than {MAX_FIELDS} fields")
    fields: dict[str, str] = {}
    for name, value in data.items():
        if name.strip():
            fields[name.strip()] = _text(name, value)
    return fields


def _text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = repr(value) if isinstance(value, float) else str(value)
    else:
        raise EventError(_shown(name), "must be a string, a number or true/false")
    _check(name, text)
    return text.strip()


def _check(name: str, value: str) -> None:
    if len(name) > MAX_NAME:
        raise EventError("query", f"a parameter name is over {MAX_NAME} characters")
    if len(value) > MAX_VALUE:
        raise EventError(_shown(name), f"longer than {MAX_VALUE} characters")


def _shown(name: str) -> str:
    return name if name.isprintable() else repr(name)


def our_fields(source: PostbackSource, given: Mapping[str, str]) -> dict[str, str]:
    """Renamed to our field names, with the trigger the source's value maps give."""
    fields: dict[str, str] = {}
    for name, value in given.items():
        if name in CONTROL:
            continue
        target = source.rename.get(name, name)
        if target not in fields or not fields[target]:
            fields[target] = value
    if not fields.get("trigger"):
        for name, mapping in source.triggers.items():
            trigger = mapping.get(fields.get(name, ""))
            if trigger:
                fields["trigger"] = trigger
                break
    return fields


def sender_name(source: PostbackSource, field: str) -> str:
    """The sender's own name for one of our fields (errors speak the sender's language)."""
    return next((theirs for theirs, ours in source.rename.items() if ours == field), field)
