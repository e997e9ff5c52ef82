"""Turns one input event (browser beacon, server call, file row) into TikTok `Event`s.

Every source shares this parser so the rules of `tiktok-events-api.md` hold whatever the
entry point. It validates strictly (a typo such as `event_name` is an error naming the
field, not a silently empty event), hashes identifiers as soon as it reads them, and returns
warnings for values it had to leave out (unparseable phones) without ever quoting them.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from gateway.core.errors import EventError
from gateway.core.event import Destination, Event
from gateway.core.event_names import EventNameMapper
from gateway.core.normalize import (
    clean_place,
    decimal_sum,
    event_id_string,
    hash_email,
    hash_external_id,
    hash_name_or_zip,
    hash_phone,
    hashed_values,
    parse_event_time,
    parse_number,
    require_sha256,
    sha256_hex,
)
from gateway.ingest.sources.beacon.enrich import canonical_ip
from gateway.settings import PixelConfig, Settings

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_MAX_TEXT = 2048
_EVENT_KEYS = frozenset(
    {
        "event",
        "event_id",
        "event_time",
        "user",
        "properties",
        "page",
        "limited_data_use",
        "test_event_code",
        "app",
        "ad",
        "lead",
    }
)
_RAW_USER_KEYS = ("ttclid", "ttp", "user_agent", "locale", "idfa", "idfv", "gaid", "att_status")
_ATT_STATUS = frozenset({"AUTHORIZED", "DENIED", "NOT_DETERMINED", "RESTRICTED", "NOT_APPLICABLE"})
_PROPERTY_TEXT = ("content_type", "order_id", "shop_id", "search_string", "description")


@dataclass(frozen=True)
class ParseRules:
    """What the parser needs from the settings, precomputed once."""

    default_phone_region: str
    names: EventNameMapper
    max_event_age_seconds: int
    max_clock_skew_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ParseRules:
        return cls(
            default_phone_region=settings.default_phone_region,
            names=EventNameMapper(settings.event_names, strict=settings.strict_event_names),
            max_event_age_seconds=settings.max_event_age_days * 86400,
            max_clock_skew_seconds=settings.max_clock_skew_seconds,
        )


@dataclass
class Parsed:
    """The events one input became, and what had to be left out (never the values)."""

    events: list[Event]
    warnings: list[str] = field(default_factory=list)


def _text(field_name: str, raw: Any, *, limit: int = _MAX_TEXT) -> str | None:
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


_EMAIL_IN_TEXT = re.compile(r"[^\s@/?&=#]+@[^\s@/?&=#]+\.[A-Za-z]{2,}")


def scrub_url(url: str) -> str:
    """The URL with email addresses in its query replaced: sign-up and checkout pages often
    carry `?email=…`, and a page URL is sent to TikTok unhashed."""
    parts = urlsplit(url)
    if "@" not in unquote(parts.query):
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    cleaned = [(k, _EMAIL_IN_TEXT.sub("redacted", v)) for k, v in pairs]
    if cleaned == pairs:
        return url
    return urlunsplit(parts._replace(query=urlencode(cleaned, safe="/:")))


def _key_name(key: str) -> str:
    """A key as an error names it: blank or oddly spaced keys are quoted so they show."""
    return key if key and key.strip() == key else repr(key)


def _table(field_name: str, raw: Any) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):  # parsed JSON: a dict; an ABC check costs far more
        raise EventError(field_name, "must be an object")
    return raw


def _user_fields() -> dict[str, tuple[str, str]]:
    """Input key → (how to read it, output key), so parsing costs only the keys present."""
    fields: dict[str, tuple[str, str]] = {}
    for target, aliases in (
        ("email", ("email", "emails")),
        ("phone", ("phone", "phone_number", "phones")),
        ("external_id", ("external_id", "external_ids")),
    ):
        for alias in aliases:
            fields[alias] = (target, target)
        fields[f"sha256_{target}"] = fields[f"{target}_sha256"] = ("sha256_list", target)
    for key in ("first_name", "last_name", "zip_code"):
        fields[key] = ("name", key)
        fields[f"sha256_{key}"] = ("sha256_one", key)
    for key in ("city", "state", "country"):
        fields[key] = ("place", key)
    for key in _RAW_USER_KEYS:
        fields[key] = ("raw", key)
    fields["ip"] = ("ip", "ip")
    return fields


_USER_FIELDS = _user_fields()


def _parse_user(raw: Mapping[str, Any], region: str, warnings: list[str]) -> dict[str, Any]:
    user: dict[str, Any] = {}
    lists: dict[str, list[str]] = {}
    for key, value in raw.items():
        spec = _USER_FIELDS.get(key)
        if spec is None:
            raise EventError(f"user.{_key_name(key)}", "unknown user field")
        kind, target = spec
        if kind == "raw":
            text = _text(f"user.{key}", value)
            if text:
                user[target] = text
        elif kind == "email":
            lists.setdefault(target, []).extend(hashed_values(f"user.{key}", value, hash_email)[0])
        elif kind == "external_id":
            hashes = hashed_values(f"user.{key}", value, hash_external_id)[0]
            lists.setdefault(target, []).extend(hashes)
        elif kind == "phone":
            hashes, dropped = hashed_values(f"user.{key}", value, lambda v: hash_phone(v, region))
            lists.setdefault(target, []).extend(hashes)
            if dropped:
                warnings.append(f"user.{key}: {dropped} value(s) not a phone number, left out")
        elif kind == "sha256_list":
            lists.setdefault(target, []).extend(require_sha256(f"user.{key}", value))
        elif kind == "ip":
            ip = _text("user.ip", value, limit=64)
            if ip:
                canonical = canonical_ip(ip)
                if canonical is None:
                    raise EventError("user.ip", "is not an IPv4 or IPv6 address")
                user["ip"] = canonical
        else:
            text = _text(f"user.{key}", value, limit=256)
            if not text:
                continue
            if kind == "sha256_one":
                user[target] = require_sha256(f"user.{key}", text)[0]
            elif kind == "name":
                user[target] = hash_name_or_zip(text)
            else:  # place
                place = clean_place(text)
                if place:
                    user[target] = place
    for target, hashes in lists.items():
        if hashes:
            user[target] = list(dict.fromkeys(hashes))
    if "att_status" in user and user["att_status"] not in _ATT_STATUS:
        raise EventError("user.att_status", f"must be one of {', '.join(sorted(_ATT_STATUS))}")
    return user


def _parse_contents(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise EventError("properties.contents", "must be a list of objects")
    contents = []
    for index, item in enumerate(raw):
        where = f"properties.contents[{index}]"
        if not isinstance(item, Mapping):
            raise EventError(where, "must be an object")
        content: dict[str, Any] = {}
        for key, value in item.items():
            if key == "content_id":
                text = _text(f"{where}.content_id", value, limit=256)
                if text:
                    content["content_id"] = text
            elif key == "price":
                content["price"] = parse_number(f"{where}.price", value)
            elif key == "quantity":
                content["quantity"] = _count(f"{where}.quantity", value, low=1)
            else:
                text = _text(f"{where}.{key}", value, limit=512)
                if text:
                    content[key] = text
        content.setdefault("quantity", 1)
        contents.append(content)
    return contents


_IDENTIFIER_KEYS = frozenset(
    {"email", "emails", "phone", "phone_number", "phones", "external_id", "external_ids"}
)
_MAX_COUNT = 1_000_000_000


def _count(field_name: str, raw: Any, *, low: int) -> int:
    """A whole number of items, as a JSON integer or a short string of digits."""
    if isinstance(raw, str) and raw.strip().isdigit() and len(raw.strip()) <= 10:
        raw = int(raw.strip())
    elif isinstance(raw, float) and raw.is_integer():
        raw = int(raw) if abs(raw) <= _MAX_COUNT else raw
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= _MAX_COUNT:
        raise EventError(field_name, f"must be a whole number from {low} to {_MAX_COUNT}")
    return raw


def _flat_section(name: str, raw: Any) -> dict[str, Any]:
    """app / ad / lead: passed through, but only as flat objects of plain values."""
    section = _table(name, raw)
    out: dict[str, Any] = {}
    for key, value in section.items():
        where = f"{name}.{key}"
        if isinstance(value, bool):
            out[key] = value
        elif isinstance(value, int | float):
            out[key] = parse_number(where, value, allow_negative=True)
        elif isinstance(value, str):
            text = _text(where, value, limit=512)
            if text:
                out[key] = text
        elif value is not None:
            raise EventError(where, "must be a string, a number or true/false")
    return out


def _parse_properties(raw: Mapping[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"properties.{key}"
        if value is None:
            continue
        if key == "value":
            props["value"] = parse_number(where, value)
        elif key == "currency":
            text = _text(where, value, limit=8)
            if text:
                if not _CURRENCY.match(text.upper()):
                    raise EventError(where, "must be an ISO 4217 code such as USD")
                props["currency"] = text.upper()
        elif key == "contents":
            props["contents"] = _parse_contents(value)
        elif key == "content_ids":
            items = value if isinstance(value, list) else [value]
            props["content_ids"] = [
                t for i, v in enumerate(items) if (t := _text(f"{where}[{i}]", v))
            ]
        elif key == "num_items":
            props["num_items"] = _count(where, value, low=0)
        elif key in _IDENTIFIER_KEYS:
            raise EventError(where, "identifiers belong in user, where they are hashed")
        elif key == "content_type" and value not in ("product", "product_group"):
            raise EventError(where, "must be 'product' or 'product_group'")
        elif key in _PROPERTY_TEXT or isinstance(value, str):
            text = _text(where, value)
            if text:
                props[key] = text
        elif isinstance(value, bool):
            props[key] = value
        elif isinstance(value, int | float):
            props[key] = parse_number(where, value, allow_negative=True)
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


def _resolve_time(raw: Any, *, now: float, rules: ParseRules, from_browser: bool) -> int:
    if raw is None:
        return int(now)
    event_time = parse_event_time("event_time", raw)
    if from_browser and abs(event_time - now) > rules.max_clock_skew_seconds:
        return int(now)  # the browser's clock is wrong: the server's receive time is better
    if event_time - now > rules.max_clock_skew_seconds:
        raise EventError("event_time", "is in the future")
    if now - event_time > rules.max_event_age_seconds:
        days = rules.max_event_age_seconds // 86400
        raise EventError("event_time", f"is older than {days} days, the oldest TikTok accepts")
    return event_time


def _derived_event_id(pixel_id: str, name: str, event_time: int, user: Mapping[str, Any]) -> str:
    """A deterministic id for a server event sent without one, so a retried post dedups."""
    keys = {k: user[k] for k in ("email", "phone", "external_id") if k in user}
    material = json.dumps([pixel_id, name, event_time, keys], sort_keys=True)
    return sha256_hex(material)[:32]


def parse_event(
    raw: Any,
    *,
    pixel: PixelConfig,
    rules: ParseRules,
    now: float,
    from_browser: bool = False,
    test_event_code: str | None = None,
    extra_keys: frozenset[str] = frozenset(),
) -> Parsed:
    """Validate, normalise and hash one input event for one pixel; fan out mapped names."""
    if not isinstance(raw, dict):
        raise EventError("event", "each event must be a JSON object")
    unknown = sorted(set(raw) - _EVENT_KEYS - extra_keys)
    if unknown:
        raise EventError(_key_name(unknown[0]), "unknown field")
    warnings: list[str] = []
    names = rules.names.map(raw.get("event"))
    event_time = _resolve_time(
        raw.get("event_time"), now=now, rules=rules, from_browser=from_browser
    )
    user = _parse_user(_table("user", raw.get("user")), rules.default_phone_region, warnings)
    properties = _parse_properties(_table("properties", raw.get("properties")))
    page = {}
    for key, value in _table("page", raw.get("page")).items():
        if key not in ("url", "referrer"):
            raise EventError(f"page.{key}", "unknown page field (url, referrer)")
        text = _text(f"page.{key}", value, limit=4096)
        if text:
            page[key] = scrub_url(text) if "@" in text or "%40" in text else text
    if pixel.event_source == "web" and "url" not in page:
        raise EventError("page.url", "is required for web events")
    limited = raw.get("limited_data_use")
    if limited is not None and not isinstance(limited, bool):
        raise EventError("limited_data_use", "must be true or false")
    sections = {k: _flat_section(k, raw[k]) for k in ("app", "ad", "lead") if raw.get(k)}
    event_id = event_id_string("event_id", raw.get("event_id"))
    if event_id is None:
        event_id = (
            str(uuid.uuid4())
            if from_browser
            else _derived_event_id(pixel.id, str(raw.get("event")), event_time, user)
        )
    code = _text("test_event_code", raw.get("test_event_code"), limit=64)
    destination = Destination(
        event_source=pixel.event_source,
        event_source_id=pixel.id,
        test_event_code=code or test_event_code or pixel.test_event_code,
    )
    events = [
        Event(
            destination=destination,
            event=name,
            event_time=event_time,
            event_id=event_id,
            user=user,
            properties=properties,
            page=page,
            limited_data_use=limited if limited is not None else (pixel.limited_data_use or None),
            sections=sections,
        )
        for name in names
    ]
    return Parsed(events=events, warnings=warnings)
