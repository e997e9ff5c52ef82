"""The `user` of an input event: identifiers hashed as they are read, match keys checked.

What the server observed of the sender (`Observed`: IP, user agent, `_ttp`, click id,
locale) is merged here, beside the input: it replaces what the input says for sources whose
policy trusts the server more (browsers), and only completes it for the others. Fields sent
raw (user agent, click ids, places) are scrubbed as identifiers: an email in a user agent
or a city is personal data too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial
from typing import Any

from gateway.core.errors import EventError
from gateway.core.normalize import (
    canonical_ip,
    clean_place,
    hash_email,
    hash_external_id,
    hash_name_or_zip,
    hash_phone,
    hashed_values,
    require_sha256,
)
from gateway.ingest.fields import MAX_TEXT, clean_text, key_name
from gateway.ingest.policy import Observed
from gateway.privacy.scrubbing import EventScrub

_TOKEN_KEYS = frozenset({"ttclid", "ttp"})
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{1,512}")
"""A click id or _ttp as TikTok issues them: no space, control character or `;` passes on."""
_RAW_USER_KEYS = ("ttclid", "ttp", "user_agent", "locale", "idfa", "idfv", "gaid", "att_status")
_ATT_STATUS = frozenset({"AUTHORIZED", "DENIED", "NOT_DETERMINED", "RESTRICTED", "NOT_APPLICABLE"})
OBSERVED_KEYS = ("ip", "user_agent", "ttp", "ttclid")


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
_HASHERS = {"email": hash_email, "external_id": hash_external_id}


def _raw_text(key: str, target: str, value: Any) -> str | None:
    """A raw user field as text; a click id or _ttp must be a token (no CR, LF, NUL or `;`
    passes on to TikTok)."""
    if type(value) is str and len(value) <= MAX_TEXT:  # the usual value, checked inline
        text = value.strip() or None
    else:
        text = clean_text(f"user.{key}", value)
    if text and target in _TOKEN_KEYS and not _TOKEN.fullmatch(text):
        raise EventError(f"user.{key}", "must be a token: letters, digits, . _ ~ + / = -")
    return text


def parse_user(
    raw: Mapping[str, Any],
    region: str,
    warnings: list[str],
    scrub: EventScrub,
    observed: Observed | None = None,
    *,
    observed_overrides: bool = False,
) -> dict[str, Any]:
    """Hashed identifiers and match keys; `warnings` get what had to be left out."""
    skipped = OBSERVED_KEYS if observed is not None and observed_overrides else ()
    user: dict[str, Any] = {}
    lists: dict[str, list[str]] = {}
    for key, value in raw.items():
        if key in skipped:  # the server knows better; the input's value is not even read
            continue
        spec = _USER_FIELDS.get(key)
        if spec is None:
            raise EventError(f"user.{key_name(key)}", "unknown user field")
        kind, target = spec
        if kind == "raw":
            text = _raw_text(key, target, value)
            if text:
                user[target] = scrub.identifier("user", text)
        elif kind == "email" or kind == "external_id" or kind == "phone":
            if type(value) is str:  # one value, as most senders give it: no list to walk
                digest = (
                    hash_phone(value, region)
                    if kind == "phone"
                    else hash_email(value)
                    if kind == "email"
                    else hash_external_id(value)
                )
                hashes, dropped = ([digest], 0) if digest else ([], int(bool(value.strip())))
            else:
                hasher = _HASHERS.get(kind) or partial(hash_phone, default_region=region)
                hashes, dropped = hashed_values(f"user.{key}", value, hasher)
            if hashes:
                lists.setdefault(target, []).extend(hashes)
            if dropped:
                warnings.append(f"user.{key}: {dropped} value(s) not a phone number, left out")
        elif kind == "sha256_list":
            lists.setdefault(target, []).extend(require_sha256(f"user.{key}", value))
        elif kind == "ip":
            ip = clean_text("user.ip", value, limit=64)
            if ip:
                user["ip"] = _ip(ip)
        else:
            one = _single_key(kind, key, value, scrub)
            if one:
                user[target] = one
    for target, hashes in lists.items():
        if hashes:
            user[target] = hashes if len(hashes) == 1 else list(dict.fromkeys(hashes))
    if observed is not None:
        _merge_observed(user, observed, scrub, overrides=observed_overrides)
    if "att_status" in user and user["att_status"] not in _ATT_STATUS:
        raise EventError("user.att_status", f"must be one of {', '.join(sorted(_ATT_STATUS))}")
    return user


def _ip(text: str) -> str:
    canonical = canonical_ip(text)
    if canonical is None:
        raise EventError("user.ip", "is not an IPv4 or IPv6 address")
    return canonical


def _single_key(kind: str, key: str, value: Any, scrub: EventScrub) -> str | None:
    """A hashed name or zip, an already-hashed one, or a place (sent as it is)."""
    text = clean_text(f"user.{key}", value, limit=256)
    if not text:
        return None
    if kind == "sha256_one":
        return require_sha256(f"user.{key}", text)[0]
    if kind == "name":
        return hash_name_or_zip(text)
    return clean_place(scrub.identifier("user", text))  # before `@` and `+` are stripped


def _merge_observed(
    user: dict[str, Any], observed: Observed, scrub: EventScrub, *, overrides: bool
) -> None:
    # OBSERVED_KEYS in their order, unrolled: this runs for every browser event
    ip, user_agent, ttp, ttclid = observed.ip, observed.user_agent, observed.ttp, observed.ttclid
    if user_agent is not None:
        if type(user_agent) is not str or len(user_agent) > MAX_TEXT:
            user_agent = clean_text("user.user_agent", user_agent)
        else:
            user_agent = user_agent.strip() or None
        user_agent = scrub.identifier("user", user_agent) if user_agent else user_agent
    if ip and (overrides or "ip" not in user):
        user["ip"] = ip
    if user_agent and (overrides or "user_agent" not in user):
        user["user_agent"] = user_agent
    if ttp and (overrides or "ttp" not in user):
        user["ttp"] = ttp
    if ttclid and (overrides or "ttclid" not in user):
        user["ttclid"] = ttclid
    if observed.locale and "locale" not in user:
        user["locale"] = observed.locale
