"""The `[postbacks]` section: sending systems (sources), tracking rules, the lead context.

    [postbacks.sources.lms]   secret, rename = { payout = "price" }, triggers = { status = … }
    [[postbacks.rules]]       name, trigger, filters, price, pixel, event, fields = { … }

Every rule is compiled here, once, into the engine's objects (`settings/tracking/`), every
fault named by its path (an unknown placeholder, an operator, a currency): `check-config`
reports them all and a reload refuses a bad file whole. Example: docs/design/postbacks.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.core.currencies import currency
from gateway.core.secret import Secret, resolve_secret
from gateway.settings.declared import setting
from gateway.settings.reader import TableReader
from gateway.settings.tracking.conditions import OPERATORS, Filter, PriceRestriction
from gateway.settings.tracking.rules import (
    CONTENT_KEYS,
    KNOWN_FIELDS,
    TEMPLATE_KEYS,
    Action,
    Rule,
    RuleSet,
    placeholders,
)
from gateway.settings.tracking.templates import Template, TemplateError

_SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
MIN_SECRET = 16


@dataclass(frozen=True)
class PostbackSource:
    """One sending system: its secret and how its parameters become our fields."""

    name: str
    secret: Secret
    rename: Mapping[str, str]
    """Incoming parameter → our field name (`payout` → `price`)."""
    triggers: Mapping[str, Mapping[str, str]]
    """Field → incoming value → trigger name (`status` → `1` → `lead_sold`)."""
    fields: tuple[str, ...] = ()
    """Extra fields its templates may name."""
    macros: Mapping[str, str] | None = None
    """Parameter → the platform's macro, for `postback-url` (None: from the rules)."""

    def describe(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "secret": str(self.secret),
            "rename": dict(self.rename),
            "triggers": {k: dict(v) for k, v in self.triggers.items()},
            "fields": list(self.fields),
        }
        if self.macros is not None:
            shown["macros"] = dict(self.macros)
        return shown


def _read_sources(
    table: TableReader, key: str, env: Mapping[str, str], problems: list[str]
) -> Mapping[str, PostbackSource]:
    sources_table = table.table(key)
    sources: dict[str, PostbackSource] = {}
    for name in sorted(sources_table.raw_keys()):
        one = sources_table.table(name)
        if not _SOURCE_NAME.fullmatch(name):
            sources_table.problem(name, "a source name is lowercase letters, digits, - or _")
            continue
        ref = one.string("secret")
        secret = Secret("", source="missing")
        if ref:
            secret = resolve_secret(
                ref, one.name("secret"), env, problems, needed=one.secrets_needed
            )
        unread = bool(ref) and not secret.reveal() and not one.secrets_needed
        if len(secret.reveal()) < MIN_SECRET and not unread:
            one.problem("secret", f"required, at least {MIN_SECRET} characters")
        rename = _string_map(one, "rename")
        for target in rename.values():
            if not _FIELD_NAME.fullmatch(target):
                one.problem("rename", f"{target!r} is not a field name")
        trigger_maps: dict[str, dict[str, str]] = {}
        maps_table = one.table("triggers")
        for field_name in maps_table.raw_keys():
            trigger_maps[field_name] = _string_map(maps_table, field_name)
        extra = tuple(one.strings("fields"))
        macros = _string_map(one, "macros") if "macros" in one.raw_keys() else None
        one.finish()
        sources[name] = PostbackSource(name, secret, rename, trigger_maps, extra, macros)
    sources_table.finish()
    return sources


def _string_map(table: TableReader, key: str) -> dict[str, str]:
    inner = table.table(key)
    out: dict[str, str] = {}
    for name, value in inner.raw().items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            inner.problem(name, "must be a string")
            continue
        out[str(name)] = str(value)
    return out


def _names(table: TableReader, key: str, *, required: bool) -> tuple[str, ...]:
    """A name or a list of names (`trigger`, `event`, `sources`)."""
    raw = table.peek(key)  # its shape picks the reader, which then marks it read
    items = table.strings(key) if isinstance(raw, list) else [table.string(key) or ""]
    names = tuple(dict.fromkeys(item.strip() for item in items if item.strip()))
    if required and not names:
        table.problem(key, "required: a name or a list of names")
    return names


def _filters(table: TableReader) -> tuple[Filter, ...]:
    filters_table = table.table("filters")
    filters = []
    for field_name, condition in filters_table.raw().items():
        kind, values = "equals", condition
        if isinstance(condition, dict):
            if len(condition) != 1 or next(iter(condition)) not in ("equals", "one_of", "none_of"):
                filters_table.problem(field_name, "use equals, one_of or none_of")
                continue
            kind, values = next(iter(condition.items()))
        elif isinstance(condition, list):
            kind = "one_of"
        listed = values if isinstance(values, list) else [values]
        if kind == "equals" and isinstance(values, list):
            filters_table.problem(field_name, "equals takes one value (one_of takes a list)")
            continue
        if not listed or not all(
            isinstance(v, str | int) and not isinstance(v, bool) for v in listed
        ):
            filters_table.problem(field_name, "must be a value or a non-empty list of values")
            continue
        filters.append(Filter(field_name, kind, tuple(str(v) for v in listed)))
    return tuple(filters)


def _price(table: TableReader) -> PriceRestriction | None:
    raw = table.value("price")
    if raw is None:
        return None
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in OPERATORS:
        table.problem("price", f"must be one of {{ {' | '.join(OPERATORS)} = … }}")
        return None
    operator, bound = next(iter(raw.items()))
    try:
        if operator == "between":
            if not isinstance(bound, list) or len(bound) != 2:
                raise ValueError("between takes [low, high]")
            return PriceRestriction(operator, _decimal(bound[0]), _decimal(bound[1]))
        return PriceRestriction(operator, _decimal(bound))
    except ValueError as exc:
        table.problem("price", str(exc))
        return None


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    return Decimal(str(value))


def _templates(table: TableReader) -> tuple[dict[str, Template], dict[str, Template]]:
    fields_table = table.table("fields")
    templates: dict[str, Template] = {}
    contents: dict[str, Template] = {}
    for key, value in fields_table.raw().items():
        name = "page_url" if key == "page.url" else key
        if name == "contents":
            contents_table = fields_table.table(key)
            for content_key, text in contents_table.raw().items():
                if content_key not in CONTENT_KEYS:
                    contents_table.problem(content_key, f"not one of {', '.join(CONTENT_KEYS)}")
                    continue
                parsed = _template(contents_table, content_key, text)
                if parsed is not None:
                    contents[content_key] = parsed
            continue
        if name not in TEMPLATE_KEYS:
            fields_table.problem(key, f"not a field an action sets ({', '.join(TEMPLATE_KEYS)})")
            continue
        parsed = _template(fields_table, key, value)
        if parsed is not None:
            templates[name] = parsed
    code = templates.get("currency")
    if code is not None and code.constant is not None and currency(code.constant) is None:
        fields_table.problem(
            "currency", f"{code.constant!r} is not an ISO 4217 code TikTok accepts"
        )
    return templates, contents


def _template(table: TableReader, key: str, value: Any) -> Template | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        table.problem(key, 'must be a string template such as "{lead_id}"')
        return None
    try:
        return Template.parse(str(value))
    except TemplateError as exc:
        table.problem(key, str(exc))
        return None


def _read_rules(
    table: TableReader, key: str, env: Mapping[str, str], problems: list[str]
) -> RuleSet:
    rules = []
    seen: set[str] = set()
    for index, rule_table in enumerate(table.tables(key)):
        before = len(problems)
        name = rule_table.string("name") or f"rule {index + 1}"
        if name in seen:
            rule_table.problem("name", f"{name!r} is used by another rule")
        seen.add(name)
        triggers = _names(rule_table, "trigger", required=True)
        events = _names(rule_table, "event", required=True)
        sources = _names(rule_table, "sources", required=False)
        pixel = rule_table.string("pixel")
        filters = _filters(rule_table)
        price = _price(rule_table)
        templates, contents = _templates(rule_table)
        rule_table.finish()
        if len(problems) == before:
            action = Action(events, pixel, templates, contents)
            rules.append(Rule(name, triggers, action, sources, filters, price))
    return RuleSet(tuple(rules))


@dataclass(frozen=True)
class PostbackSettings:
    """Sources, rules and the lead-context store."""

    sources: Mapping[str, PostbackSource] = setting(default_factory=dict, read=_read_sources)
    rules: RuleSet = setting(default_factory=RuleSet, read=_read_rules)
    max_body_bytes: int = setting(65_536, low=1024, high=1_048_576)
    log_size: int = setting(200, low=0, high=100_000)
    """Postbacks kept per source for `tiktok-gateway postbacks` (0: none)."""
    context_keys: tuple[str, ...] = setting(("external_id", "order_id", "lead_id"))
    """Identity keys whose browser context is remembered: `external_id`, `order_id`, or a
    property (browser) / field (postback) of that name."""
    context_secrets: tuple[Secret, ...] = setting(
        (), env="GATEWAY_CONTEXT_SECRET", env_first=True, min_length=MIN_SECRET
    )
    """The HMAC key of stored identity keys (the first); without one, keys are hashed with a
    key derived from the cookie secret, or one made at start (then a restart forgets)."""
    context_days: int = setting(28, low=1, high=28)
    context_max_entries: int = setting(1_000_000, low=100, high=100_000_000)
    """Entries kept at most; past it, those no backend event has found are evicted first."""
    context_new_per_minute: int = setting(30, low=0, high=1_000_000)
    """New identity keys one client address (an IPv6 /64) may leave per minute (0: no limit),
    so that nobody can cheaply fill the store and evict real leads; one visitor leaves a few."""

    def configured_fields(self) -> frozenset[str]:
        """What a placeholder may name: known fields and every source's own."""
        names = set(KNOWN_FIELDS)
        for source in self.sources.values():
            names.update(source.rename.values())
            names.update(source.fields)
        return frozenset(names)

    def problems(self) -> Any:
        fields = self.configured_fields()
        for index, rule in enumerate(self.rules.rules):
            for name in placeholders(rule):
                if name not in fields:
                    yield (
                        f"rules[{index}].fields",
                        f"{{{name}}} names no known or configured field (rule {rule.name!r}; "
                        "add it to a source's `fields` or `rename`)",
                    )
            for source in rule.sources:
                if source not in self.sources:
                    yield f"rules[{index}].sources", f"{source!r} is not a configured source"
