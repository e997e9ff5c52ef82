"""The parts of an input event other than its user: properties, contents, page, sections.

Strict: an unknown or mistyped value is an error naming its field, never silently dropped;
identifiers are refused outside `user` (they would travel unhashed); every text and URL
passes the event's scrubber (scrubbing.py), as TikTok receives them as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway.core.errors import EventError
from gateway.core.normalize import MAX_AMOUNT, decimal_sum, parse_number
from gateway.privacy.scrubbing import EventScrub

_CURRENCY = re.compile(r"[A-Z]{3}")
MAX_TEXT = 2048
_PROPERTY_TEXT = ("content_type", "order_id", "shop_id", "search_string", "description")
_PROPERTY_IDS = frozenset({"order_id", "shop_id"})


def clean_text(field_name: str, raw: Any, *, limit: int = MAX_TEXT) -> str | None:
    if type(raw) is str:  # the common case first: this runs ~10 times per event
        text = raw.strip()
    elif raw is None:
        return None
    elif isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise EventError(field_name, "must be a string")
    else:
        text = str(raw).strip()
    if len(text) > limit:
        raise EventError(field_name, f"must be at most {limit} characters")
    return text or None


def key_name(key: str) -> str:
    """A key as an error names it: blank or oddly spaced keys are quoted so they show."""
    return key if key and key.strip() == key else repr(key)


def table(field_name: str, raw: Any) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):  # parsed JSON: a dict; an ABC check costs far more
        raise EventError(field_name, "must be an object")
    return raw


def _parse_contents(raw: Any, scrub: EventScrub) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise EventError("properties.contents", "must be a list of objects")
    contents = []
    for index, item in enumerate(raw):
        if type(item) is not dict and not isinstance(item, Mapping):
            raise EventError(f"properties.contents[{index}]", "must be an object")
        content: dict[str, Any] = {}
        # the usual values are checked inline; anything else (and every error) takes the
        # general path, which names the field: its name is built only then
        for key, value in item.items():
            if key == "content_id":
                if type(value) is str and len(value) <= 256:
                    text = value.strip() or None
                else:
                    text = clean_text(f"{_item(index)}.content_id", value, limit=256)
                if text:
                    content["content_id"] = scrub.identifier("contents", text)
            elif key == "price":
                plain = type(value) is float or type(value) is int
                content["price"] = (
                    value
                    if plain and 0 <= value <= MAX_AMOUNT
                    else parse_number(f"{_item(index)}.price", value)
                )
            elif key == "quantity":
                content["quantity"] = (
                    value
                    if type(value) is int and 1 <= value <= _MAX_COUNT
                    else count(f"{_item(index)}.quantity", value, low=1)
                )
            else:
                text = clean_text(f"{_item(index)}.{key}", value, limit=512)
                if text:
                    content[scrub.identifier("contents", key)] = scrub.text("contents", text)
        content.setdefault("quantity", 1)
        contents.append(content)
    return contents


def _item(index: int) -> str:
    return f"properties.contents[{index}]"


_IDENTIFIER_KEYS = frozenset(
    {"email", "emails", "phone", "phone_number", "phones", "external_id", "external_ids"}
)
_MAX_COUNT = 1_000_000_000


def _digits(text: str) -> bool:
    """ASCII digits only: '²'.isdigit() is true, and int('²') fails."""
    return text.isascii() and text.isdigit()


def count(field_name: str, raw: Any, *, low: int) -> int:
    """A whole number of items, as a JSON integer or a short string of digits."""
    if isinstance(raw, str) and _digits(raw.strip()) and len(raw.strip()) <= 10:
        raw = int(raw.strip())
    elif isinstance(raw, float) and raw.is_integer():
        raw = int(raw) if abs(raw) <= _MAX_COUNT else raw
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= _MAX_COUNT:
        raise EventError(field_name, f"must be a whole number from {low} to {_MAX_COUNT}")
    return raw


def flat_section(name: str, raw: Any, scrub: EventScrub) -> dict[str, Any]:
    """app / ad / lead: passed through, but only as flat objects of plain values (ids: their
    texts are scrubbed as identifiers)."""
    section = table(name, raw)
    out: dict[str, Any] = {}
    for raw_key, value in section.items():
        where = f"{name}.{raw_key}"
        key = scrub.identifier(name, raw_key)
        if isinstance(value, bool):
            out[key] = value
        elif isinstance(value, int | float):
            out[key] = parse_number(where, value, allow_negative=True)
        elif isinstance(value, str):
            text = clean_text(where, value, limit=512)
            if text:
                out[key] = scrub.identifier(name, text)
        elif value is not None:
            raise EventError(where, "must be a string, a number or true/false")
    return out


def parse_properties(raw: Mapping[str, Any], scrub: EventScrub) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if key == "value" and (type(value) is float or type(value) is int) and value >= 0:
            if value > MAX_AMOUNT:  # the usual value inline; the general path reports
                parse_number("properties.value", value)
            props["value"] = value
            continue
        if key == "currency" and type(value) is str and len(value) <= 8:
            code = value.strip().upper()
            if code:
                if not _CURRENCY.fullmatch(code):
                    raise EventError("properties.currency", "must be an ISO 4217 code such as USD")
                props["currency"] = code
            continue
        where = f"properties.{key}"
        if key == "value":
            props["value"] = parse_number(where, value)
        elif key == "currency":
            text = clean_text(where, value, limit=8)
            if text:
                if not _CURRENCY.fullmatch(text.upper()):
                    raise EventError(where, "must be an ISO 4217 code such as USD")
                props["currency"] = text.upper()
        elif key == "contents":
            props["contents"] = _parse_contents(value, scrub)
        elif key == "content_ids":
            items = value if isinstance(value, list) else [value]
            props["content_ids"] = [
                scrub.identifier("properties", t)
                for i, v in enumerate(items)
                if (t := clean_text(f"{where}[{i}]", v))
            ]
        elif key == "num_items":
            props["num_items"] = count(where, value, low=0)
        elif key in _IDENTIFIER_KEYS:
            raise EventError(where, "identifiers belong in user, where they are hashed")
        elif key == "content_type" and value not in ("product", "product_group"):
            raise EventError(where, "must be 'product' or 'product_group'")
        elif key in _PROPERTY_TEXT or isinstance(value, str):
            text = clean_text(where, value)
            if text and key in _PROPERTY_IDS:
                props[key] = scrub.identifier("properties", text)
            elif text:
                props[_custom_key(key, scrub)] = scrub.text("properties", text)
        elif isinstance(value, bool):
            props[_custom_key(key, scrub)] = value
        elif isinstance(value, int | float):
            props[_custom_key(key, scrub)] = parse_number(where, value, allow_negative=True)
        else:
            raise EventError(where, "custom properties must be strings, numbers or booleans")
    contents: list[dict[str, Any]] = props.get("contents") or []
    derivable = contents and "currency" in props and all("price" in c for c in contents)
    if "value" not in props and derivable:
        total = decimal_sum([(c["price"], c["quantity"]) for c in contents])
        props["value"] = parse_number("properties.value", total)
    if "value" in props and "currency" not in props:
        raise EventError("properties.currency", "is required when a value is sent")
    return props


def _custom_key(key: str, scrub: EventScrub) -> str:
    """A custom property's name goes to TikTok too: an email used as one is scrubbed."""
    return key if key in _PROPERTY_TEXT else scrub.identifier("properties", key)


_PAGE_FIELDS = {"url": "page.url", "referrer": "page.referrer"}


def parse_page(raw: Any, scrub: EventScrub) -> dict[str, str]:
    page = {}
    for key, value in table("page", raw).items():
        field_name = _PAGE_FIELDS.get(key)
        if field_name is None:
            raise EventError(f"page.{key}", "unknown page field (url, referrer)")
        if type(value) is str and len(value) <= 4096:
            value_text = value.strip() or None
        else:
            value_text = clean_text(field_name, value, limit=4096)
        if value_text:
            page[key] = scrub.url(field_name, value_text)
    return page
