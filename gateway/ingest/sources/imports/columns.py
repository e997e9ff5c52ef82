"""A file's columns → the gateway's input event: names, aliases, `--map`, and the seed's rules.

The columns are those a CDP's TikTok connector understands (`email`, `phone`, `timestamp`,
`price`, `cookie_id`, `tiktok_click_id`, `lead_id`…) plus obvious aliases (`ttclid`, `ttp`,
`phone_number`…), compared trimmed, lowercased, spaces and dashes as underscores. Columns
nobody understands are ignored and listed in the summary, never guessed at. A row becomes a
dict in the server API's shape for the one parser; nothing here validates beyond what only a
file has (the required timestamp).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gateway.core.errors import EventError

FIELDS = (
    "email", "phone", "external_id", "event", "event_id", "timestamp", "value", "currency",
    "price", "quantity", "content_id", "content_name", "content_category", "content_type",
    "brand", "order_id", "shop_id", "description", "ip", "user_agent", "page_url",
    "referrer_url", "locale", "ttp", "ttclid", "lead_id",
)  # fmt: skip
ALIASES = {
    "agent": "user_agent",
    "cookie_id": "ttp",
    "tiktok_click_id": "ttclid",
    "phone_number": "phone",
    "email_address": "email",
    "sha256_email": "email",
    "sha256_phone": "phone",
    "sha256_external_id": "external_id",
    "event_name": "event",
    "event_time": "timestamp",
    "url": "page_url",
    "referrer": "referrer_url",
    "sku": "content_id",
}
_USER = ("email", "phone", "external_id", "ip", "user_agent", "locale", "ttp", "ttclid")
_PROPERTIES = ("value", "currency", "content_type", "order_id", "shop_id", "description")
_CONTENT = ("content_id", "content_name", "content_category", "brand", "price", "quantity")
_WHERE = {  # a parser field (its last part) → the import field it came from
    "event_time": "timestamp",
    "url": "page_url",
    "referrer": "referrer_url",
}


def column_key(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def field_of(name: str) -> str | None:
    key = column_key(name)
    return key if key in FIELDS else ALIASES.get(key)


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """`--map COLUMN=FIELD` options → {column key: field}; ValueError names a bad one."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, target = pair.partition("=")
        target_field = field_of(target) if target.strip() else None
        if not sep or not column.strip() or target_field is None:
            raise ValueError(
                f"--map {pair!r}: expected COLUMN=FIELD with FIELD one of {', '.join(FIELDS)}"
            )
        mapping[column_key(column)] = target_field
    return mapping


@dataclass
class Columns:
    """Which field each column feeds, decided once per header (per key for JSON Lines)."""

    mapping: Mapping[str, str] = field(default_factory=dict)
    fields: dict[str, str | None] = field(default_factory=dict)
    """column as written → field (None: ignored)."""
    ignored: list[str] = field(default_factory=list)

    def field(self, column: str) -> str | None:
        known = self.fields.get(column, "?")
        if known != "?":
            return known
        key = column_key(column)
        target = self.mapping.get(key) or field_of(key)
        if target is None and column not in self.ignored:
            self.ignored.append(column)
        self.fields[column] = target
        return target

    def column(self, target: str) -> str:
        """The file's name for a field, for the report (the field itself when unmapped)."""
        for column, mapped in self.fields.items():
            if mapped == target:
                return column
        return target

    def where(self, parser_field: str) -> str:
        """The column an error of the parser (`user.email`, `properties.contents[1].price`)
        is about."""
        last = parser_field.split(".")[-1].split("[")[0]
        last = _WHERE.get(last, last)
        if parser_field.startswith("lead."):
            last = "lead_id"
        return self.column(last) if last in FIELDS else parser_field


@dataclass(frozen=True)
class RowRules:
    """What every row of one import shares: the options that fill or forbid fields."""

    event: str | None = None
    currency: str | None = "USD"
    limited_data_use: bool = False
    """Only web event sets: TikTok ignores it on offline events (the seed)."""


_UNSEEN = object()
_PLACE = {
    **{k: "user" for k in _USER},
    **{k: "properties" for k in _PROPERTIES},
    **{k: "content" for k in _CONTENT},
}


def to_input(values: Mapping[str, Any], columns: Columns, rules: RowRules) -> dict[str, Any]:
    """One row as an input event (server API shape); EventError for what only a file lacks.

    One pass over the row's values (this runs once per row: a million times per file)."""
    known = columns.fields
    found: dict[str, Any] = {}
    user: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    content: dict[str, Any] = {}
    for column, value in values.items():
        target: Any = known.get(column, _UNSEEN)
        if target is _UNSEEN:
            target = columns.field(column)
        if target is None or value is None:
            continue
        if type(value) is str:
            value = value.strip()
            if not value:
                continue
        place = _PLACE.get(target)
        if place == "user":
            user[target] = value
        elif place == "properties":
            properties[target] = value
        elif place == "content":
            content[target] = value
        else:
            found[target] = value
    event = found.get("event") or rules.event
    if not event:
        raise EventError("event", "missing: add an event column or pass --event")
    timestamp = found.get("timestamp")
    if timestamp is None:
        raise EventError("timestamp", "missing: every row needs the time of its conversion")
    raw: dict[str, Any] = {"event": event, "event_time": timestamp}
    if "event_id" in found:
        raw["event_id"] = found["event_id"]
    if user:
        raw["user"] = user
    if content:
        properties["contents"] = [content]
        properties.setdefault("content_type", "product")
    if rules.currency and ("value" in properties or "price" in content):
        properties.setdefault("currency", rules.currency)
    if properties:
        raw["properties"] = properties
    if "page_url" in found or "referrer_url" in found:
        page = {"url": found.get("page_url"), "referrer": found.get("referrer_url")}
        raw["page"] = {k: v for k, v in page.items() if v is not None}
    if "lead_id" in found:
        raw["lead"] = {"lead_id": found["lead_id"]}
    if rules.limited_data_use:
        raw["limited_data_use"] = True
    return raw


def merged(first: dict[str, Any], lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Order lines (rows sharing an order id and event) as ONE event: the first row's user,
    time and id, every line's contents, and value Σ price × quantity when each has a price
    (the parser sums in decimal), else the sum of the lines' values."""
    event = dict(first)
    properties = dict(first.get("properties", {}))
    contents = [c for line in lines for c in line.get("properties", {}).get("contents", [])]
    if contents:
        properties["contents"] = contents
    if contents and all("price" in c for c in contents) and len(contents) == len(lines):
        properties.pop("value", None)
    else:
        values = [line.get("properties", {}).get("value") for line in lines]
        if all(v is not None for v in values):
            properties["value"] = _sum(values, properties.get("value"))
    event["properties"] = properties
    return event


def _sum(values: list[Any], fallback: Any) -> Any:
    try:
        return float(sum((Decimal(str(v)) for v in values), Decimal(0)))
    except ArithmeticError:
        return fallback  # the parser reports the bad value
