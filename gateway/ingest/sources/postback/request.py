"""A postback's parameters, however they came, as our fields: a flat map of strings.

Lead systems fire a URL with macros filled in (GET with a query string), post the same as
a form (the LMS's "FORM" method), or post JSON. All three become one `dict[str, str]`;
then the source's renames apply (`payout` → `price`) and its value maps set the trigger
(`status=1` → `lead_sold`). Limits are checked as the input is read — the number of
fields, the length of names and values — and a fault is a 400 naming the parameter.
Parameters that steer the gateway itself (`key`, `dry_run`) are taken out first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from gateway.core.errors import EventError, UnsupportedMediaType
from gateway.settings import PostbackSource

MAX_FIELDS = 200
MAX_NAME = 128
MAX_VALUE = 2048
MAX_NESTED_FIELDS = 1000
"""Fields a JSON body may give in all, nested objects' included (past it: left out)."""
MAX_DEPTH = 8
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
        if not name.strip():
            continue
        if isinstance(value, dict | list):
            _flatten(name.strip(), value, fields, 1)
        else:
            fields[name.strip()] = _text(name, value)
    return fields


def _flatten(prefix: str, value: Any, into: dict[str, str], depth: int) -> None:
    """A nested object's scalars as dotted names (`relationship.offer.name`, `items.0.sku`),
    for rename, filters and templates. Only what a rule reads matters, so what cannot be a
    field (too deep, too many, too long) is left out, never a 400."""
    pairs = value.items() if isinstance(value, dict) else enumerate(value)
    for key, inner in pairs:
        name = f"{prefix}.{key}"
        if len(into) >= MAX_NESTED_FIELDS or len(name) > MAX_NAME:
            return
        if isinstance(inner, dict | list):
            if depth < MAX_DEPTH:
                _flatten(name, inner, into, depth + 1)
        elif inner is None or isinstance(inner, str | int | float):
            text = _scalar(inner)
            if len(text) <= MAX_VALUE:
                into.setdefault(name, text.strip())


def _scalar(value: str | int | float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _text(name: str, value: Any) -> str:
    if not (value is None or isinstance(value, str | int | float)):
        raise EventError(_shown(name), "must be a string, a number or true/false")
    text = _scalar(value)
    _check(name, text)
    return text.strip()


def _check(name: str, value: str) -> None:
    if len(name) > MAX_NAME:
        raise EventError("query", f"a parameter name is over {MAX_NAME} characters")
    if len(value) > MAX_VALUE:
        raise EventError(_shown(name), f"longer than {MAX_VALUE} characters")


def _shown(name: str) -> str:
    return name if name.isprintable() else repr(name)


_UNFILLED = re.compile(r"(?:\{[\w.-]*\})+|(?:\{\{[\w.-]*\}\})+|(?:#[\w.-]+#)+|(?:\[[\w.-]+\])+")
"""A platform's macro left as it was written: `{externalid}`, `#s2#`, `[token]`."""


def is_unfilled_macro(value: str) -> bool:
    """Whether a value is only unfilled macros (the platform had nothing to put there)."""
    return value[:1] in "{#[" and bool(value) and _UNFILLED.fullmatch(value) is not None


def our_fields(source: PostbackSource, given: Mapping[str, str]) -> dict[str, str]:
    """Renamed to our field names, with the trigger the source's value maps give."""
    fields: dict[str, str] = {}
    for name, value in given.items():
        if name in CONTROL:
            continue
        target = source.rename.get(name, name)
        if target not in fields or not fields[target] or is_unfilled_macro(fields[target]):
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
