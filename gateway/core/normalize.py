"""Normalisation and SHA-256 hashing of identifiers, timestamps and values, per the spec.

These are the rules TikTok matches on: a wrong byte here (an untrimmed email, a phone without
'+', a hash of a hash) silently costs matched conversions, so each rule follows the
"Decisions" table of `docs/tiktok-events-api.md` literally. Functions are pure; errors name the
field, never the value, so nothing raw reaches a log through an exception.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import phonenumbers

from gateway.core.errors import EventError

_SHA256_HEX = re.compile(r"[A-Fa-f0-9]{64}")
_PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_MILLISECONDS_FROM = 100_000_000_000  # a seconds value this large would be the year 5138
_LATEST_MILLISECONDS = 100_000_000_000_000
MAX_AMOUNT = 1e15
"""Largest value / price accepted: beyond any real order, well inside a double's integers."""
_MAX_NUMBER_TEXT = 32


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=8192)
def ip_address(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


@lru_cache(maxsize=8192)
def canonical_ip(text: str) -> str | None:
    """The address in canonical form, or None; cached, as the same visitors come back."""
    address = ip_address(text)
    return str(address) if address is not None else None


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _hash_or_pass(normalised: str) -> str:
    """Already-hashed values pass through lowercased: never hash a hash."""
    if len(normalised) == 64 and _SHA256_HEX.fullmatch(normalised):
        return normalised.lower()
    return sha256_hex(normalised)


def hash_email(value: str) -> str | None:
    """Trim, lowercase, SHA-256. A blank gives None: never send the hash of ''."""
    text = value.strip().lower()
    return _hash_or_pass(text) if text else None


def hash_external_id(value: str) -> str | None:
    """Trim only; case is kept, as TikTok's own template does."""
    text = value.strip()
    return _hash_or_pass(text) if text else None


def hash_name_or_zip(value: str) -> str | None:
    """first_name / last_name / zip_code: trim, lowercase, drop inner spaces, SHA-256."""
    text = "".join(value.split()).lower()
    return _hash_or_pass(text) if text else None


def clean_place(value: str) -> str | None:
    """city / state / country are sent raw: lowercased letters and digits only."""
    text = "".join(ch for ch in value.lower() if ch.isalnum())
    return text or None


def e164(value: str, default_region: str) -> str | None:
    """Parse a phone number into E.164 with '+', or None when it is not a possible number.

    `phonenumbers` knows every region's trunk prefixes and international dialling codes;
    a possible-but-not-valid number (US 555 numbers, new ranges) is still accepted. Not
    cached: a cache would keep raw phone numbers in memory.
    """
    try:
        number = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def hash_phone(value: str, default_region: str) -> str | None:
    """E.164 then SHA-256; raises nothing: an unparseable phone is left out by the caller."""
    text = value.strip()
    if not text:
        return None
    if _SHA256_HEX.fullmatch(text):
        return text.lower()
    number = e164(text, default_region)
    return sha256_hex(number) if number else None


def hashed_values(
    field: str, raw: Any, hasher: Callable[[str], str | None]
) -> tuple[list[str], int]:
    """Hash one value or a list of values; returns (hashes, number of values dropped).

    Blanks are left out silently; values the hasher refuses (unparseable phones) are counted
    so the caller can report them without ever logging them.
    """
    values = raw if isinstance(raw, list) else [raw]
    hashes: list[str] = []
    dropped = 0
    for index, value in enumerate(values):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            where = f"{field}[{index}]" if isinstance(raw, list) else field
            raise EventError(where, "must be a string or a list of strings")
        text = str(value)
        if not text.strip():
            continue
        digest = hasher(text)
        if digest is None:
            dropped += 1
        elif digest not in hashes:
            hashes.append(digest)
    return hashes, dropped


def require_sha256(field: str, raw: Any) -> list[str]:
    """Pre-hashed input fields (sha256_email …) must already be SHA-256 hex."""
    values = raw if isinstance(raw, list) else [raw]
    out: list[str] = []
    for value in values:
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value.strip()):
            raise EventError(field, "must be a SHA-256 hex digest (64 hex characters)")
        out.append(value.strip().lower())
    return out


def parse_event_time(field: str, raw: Any) -> int:
    """ISO 8601, Unix seconds or Unix milliseconds → integer Unix seconds (floored)."""
    if type(raw) is int and 0 < raw < _LATEST_MILLISECONDS:  # the usual value, inline
        return raw // 1000 if raw >= _MILLISECONDS_FROM else raw
    if isinstance(raw, bool) or raw is None:
        raise EventError(field, "must be Unix seconds, Unix milliseconds or an ISO 8601 time")
    if isinstance(raw, str):
        text = raw.strip()
        if len(text) <= _MAX_NUMBER_TEXT and _PLAIN_NUMBER.fullmatch(text):
            raw = float(text) if "." in text else int(text)
        else:
            try:
                if len(text) > 40:  # the longest ISO 8601 form with fractions and an offset
                    raise ValueError(text)
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise EventError(field, "is not an ISO 8601 time or a Unix timestamp") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return math.floor(moment.timestamp())
    if isinstance(raw, (int, float)):
        if not 0 < raw < _LATEST_MILLISECONDS:  # also refuses inf and nan
            raise EventError(field, "must be a positive timestamp in seconds or milliseconds")
        seconds = raw / 1000 if raw >= _MILLISECONDS_FROM else raw
        return math.floor(seconds)
    raise EventError(field, "must be Unix seconds, Unix milliseconds or an ISO 8601 time")


def parse_number(field: str, raw: Any, *, allow_negative: bool = False) -> int | float:
    """A JSON number, or a plain numeric string such as "19.99"; "$19.99" and "19,99" fail."""
    if isinstance(raw, bool) or raw is None:
        raise EventError(field, "must be a number")
    if isinstance(raw, str):
        text = raw.strip()
        if len(text) > _MAX_NUMBER_TEXT or not _PLAIN_NUMBER.fullmatch(text):
            raise EventError(
                field, "must be a plain number like 19.99 (no currency symbol or comma)"
            )
        raw = int(text) if "." not in text else float(text)
    if not isinstance(raw, (int, float)):
        raise EventError(field, "must be a number")
    if not -MAX_AMOUNT <= raw <= MAX_AMOUNT:  # also refuses inf and nan
        raise EventError(field, f"must be at most {MAX_AMOUNT:.0e} in size")
    if raw < 0 and not allow_negative:
        raise EventError(field, "must not be negative")
    return raw


def decimal_sum(pairs: list[tuple[int | float, int]]) -> float:
    """Σ price × quantity in decimal arithmetic, so 0.1 × 3 is 0.3 and not 0.30000000000000004."""
    total = Decimal(0)
    try:
        for price, quantity in pairs:
            total += Decimal(str(price)) * quantity
    except InvalidOperation:  # pragma: no cover - inputs were validated as finite numbers
        return 0.0
    return float(total)


def event_id_string(field: str, raw: Any) -> str | None:
    """event_id is always a string for TikTok; a number becomes its decimal string."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise EventError(field, "must be a string")
    if isinstance(raw, (int, float)):
        if not -1e18 < raw < 1e18:  # also refuses inf and nan
            raise EventError(field, "must be a string (or a number below 10^18)")
        if isinstance(raw, int):
            return str(raw)
        return str(int(raw)) if raw.is_integer() else repr(raw)
    if isinstance(raw, str):
        text = raw.strip()
        if len(text) > 256:
            raise EventError(field, "must be at most 256 characters")
        return text or None
    raise EventError(field, "must be a string")
