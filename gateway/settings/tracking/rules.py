"""Tracking rules: which postbacks become which TikTok events, as lead systems configure them.

A rule has a trigger (one or several), filters on any field, an optional price restriction,
and an action: the pixel, one or several event names, and field templates (`templates.py`).
`RuleSet.evaluate` runs every rule a source may use: every match fires (one postback may
become several events), every miss says the first condition that failed, so a postback that
fired nothing is answered 200 with reasons. The events are raw input for the one parser;
rendering is deterministic, so the same postback gives the same `event_id`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.core.currencies import currency as iso_currency
from gateway.settings.tracking.conditions import (
    Filter,
    NotANumber,
    PriceRestriction,
    number,
)
from gateway.settings.tracking.templates import Template

TRIGGERS = (
    "lead_sold",
    "lead_rejected",
    "campaign_rejected",
    "campaign_sold",
    "revenue_pingback",
    "publisher_earning_received",
    "disposition_updated",
    "publisher_earning_adjusted",
    "lead_return",
    "lead_partial_return",
    "price_reject_sold",
    "price_reject_rejected",
    "price_reject_register",
    "form_submit",
    "offer_click",
    "offer_conversion",
)
"""The lifecycle names our users' systems send; any other name is allowed too."""

KNOWN_FIELDS = frozenset(
    {
        "trigger",
        "lead_id",
        "price",
        "payout",
        "revenue",
        "currency",
        "status",
        "publisher",
        "channel",
        "source",
        "sub_source",
        "buyer",
        "campaign",
        "pingtree",
        "offer_id",
        "click_id",
        "transaction_id",
        "sub_id",
        "email",
        "phone",
        "first_name",
        "last_name",
        "zip_code",
        "city",
        "state",
        "country",
        "ip",
        "user_agent",
        "ttclid",
        "ttp",
        "url",
        "referrer",
        "locale",
        "external_id",
        "order_id",
        "event_time",
        "test_event_code",
        "content_id",
        "quantity",
    }
)
"""Fields a placeholder may name without configuring them; a source's renames add more."""

USER_TEMPLATES = (
    "email",
    "phone",
    "external_id",
    "ip",
    "user_agent",
    "ttclid",
    "ttp",
    "locale",
    "first_name",
    "last_name",
    "zip_code",
    "city",
    "state",
    "country",
)
PROPERTY_TEMPLATES = ("order_id", "content_type", "description")
CONTENT_KEYS = ("content_id", "content_name", "content_category", "brand", "price", "quantity")
OTHER_TEMPLATES = ("event_id", "value", "currency", "page_url", "referrer", "test_event_code")
TEMPLATE_KEYS = (*OTHER_TEMPLATES, *USER_TEMPLATES, *PROPERTY_TEMPLATES, "event_time")
"""What an action may template (`contents` is a table of CONTENT_KEYS templates)."""

DEFAULT_TEMPLATES = {
    **{key: f"{{{key}}}" for key in USER_TEMPLATES},
    "order_id": "{order_id}",
    "page_url": "{url}",
    "referrer": "{referrer}",
    "currency": "{currency}",
    "event_time": "{event_time}",
}
"""A field the action does not template takes the postback's field of the same name."""
_DEFAULTS = {key: Template.parse(text) for key, text in DEFAULT_TEMPLATES.items()}
_HASHED_KEYS = frozenset({"email", "phone", "external_id", "first_name", "last_name", "zip_code"})


@dataclass(frozen=True)
class Action:
    """What a rule sends: to which pixel, as which events, with which fields."""

    events: tuple[str, ...]
    pixel: str | None = None
    """None: the only configured pixel."""
    templates: Mapping[str, Template] = field(default_factory=dict)
    contents: Mapping[str, Template] = field(default_factory=dict)

    @functools.cached_property
    def effective(self) -> tuple[tuple[str, Template], ...]:
        """Every field's template, the defaults included: worked out once, used per postback."""
        keys = [k for k in TEMPLATE_KEYS if k in self.templates or k in _DEFAULTS]
        return tuple((k, self.templates.get(k) or _DEFAULTS[k]) for k in keys)

    @functools.cached_property
    def plan(self) -> tuple[tuple[str, str | None, Template], ...]:
        """`effective` with the field a template is nothing but (`"{email}"`, as most
        defaults are): such a template renders as a lookup of that field."""
        return tuple((k, _only_field(t), t) for k, t in self.effective)


@dataclass(frozen=True)
class Rule:
    name: str
    triggers: tuple[str, ...]
    action: Action
    sources: tuple[str, ...] = ()
    """The sources whose postbacks it sees; empty: every source."""
    filters: tuple[Filter, ...] = ()
    price: PriceRestriction | None = None

    def describe(self) -> dict[str, Any]:
        """The rule as a user would write it (for `check-config`)."""
        shown: dict[str, Any] = {"name": self.name, "trigger": list(self.triggers)}
        if self.sources:
            shown["sources"] = list(self.sources)
        if self.filters:
            shown["filters"] = {f.field: f.describe() for f in self.filters}
        if self.price is not None:
            shown["price"] = self.price.describe()
        if self.action.pixel is not None:
            shown["pixel"] = self.action.pixel
        shown["event"] = list(self.action.events)
        fields: dict[str, Any] = {k: str(t) for k, t in self.action.templates.items()}
        if self.action.contents:
            fields["contents"] = {k: str(t) for k, t in self.action.contents.items()}
        shown["fields"] = fields
        return shown

    def applies_to(self, source: str) -> bool:
        return not self.sources or source in self.sources

    def failure(self, fields: Mapping[str, str]) -> str | None:
        """The first condition the postback fails, or None; raises NotANumber (see price)."""
        trigger = fields.get("trigger", "")
        if trigger not in self.triggers:
            wanted = " or ".join(self.triggers)
            return f"trigger: {trigger or 'absent'!r} is not {wanted}"
        for condition in self.filters:
            reason = condition.failure(fields)
            if reason is not None:
                return reason
        if self.price is not None:
            return self.price.failure(fields)
        return None


@dataclass(frozen=True)
class Built:
    """One event a rule built: the raw input event for the parser, and its pixel."""

    pixel: str | None
    raw: dict[str, Any]


@dataclass(frozen=True)
class Fired:
    rule: str
    events: tuple[Built, ...]


@dataclass(frozen=True)
class Unmatched:
    rule: str
    reason: str
    skipped: bool = False
    """True: the rule matched but could not build a valid event (counted and logged)."""


@dataclass
class Evaluation:
    """Every rule of the source: the ones that fired and why the others did not."""

    fired: list[Fired] = field(default_factory=list)
    unmatched: list[Unmatched] = field(default_factory=list)


class Skipped(Exception):
    """A matching rule that cannot build a valid event; the message is the reason."""


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()

    def describe(self) -> list[dict[str, Any]]:
        return [rule.describe() for rule in self.rules]

    @functools.cached_property
    def identifier_fields(self) -> frozenset[str]:
        """Postback fields that become hashed identifiers (an `external_id = "{lead_id}"`
        makes `lead_id` one): the postback log keeps them hashed only."""
        names = {"email", "phone", "external_id", "first_name", "last_name", "zip_code"}
        for rule in self.rules:
            for key, template in rule.action.effective:
                if key in _HASHED_KEYS:
                    names.update(template.fields)
        return frozenset(names)

    @functools.cached_property
    def read_fields(self) -> frozenset[str]:
        """Every field some rule reads, and the fields the gateway itself knows: what the
        postback log keeps (scrubbed); a sender's other fields are kept by name only."""
        names = set(KNOWN_FIELDS)
        for rule in self.rules:
            names.update(fields_read(rule))
        return frozenset(names)

    def evaluate(self, source: str, fields: Mapping[str, str]) -> Evaluation:
        """Run every rule of `source`; raises NotANumber for a price a rule must compare."""
        result = Evaluation()
        for rule in self.rules:
            if not rule.applies_to(source):
                continue
            reason = rule.failure(fields)
            if reason is not None:
                result.unmatched.append(Unmatched(rule.name, reason))
                continue
            try:
                result.fired.append(Fired(rule.name, build(rule, source, fields)))
            except Skipped as exc:
                result.unmatched.append(Unmatched(rule.name, str(exc), skipped=True))
        return result


def build(rule: Rule, source: str, fields: Mapping[str, str]) -> tuple[Built, ...]:
    """The rule's events for this postback; raises Skipped when one cannot be valid."""
    action = rule.action
    rendered: dict[str, str | None] = dict.fromkeys(TEMPLATE_KEYS)
    for key, only, template in action.plan:
        text = fields.get(only) if only is not None else template.render(fields)
        if text:  # else None, as the key starts: absent, blank or rendered empty
            rendered[key] = text.strip() or None
    event_id = rendered.pop("event_id")
    if "event_id" not in action.templates:
        event_id = derived_event_id(rule.name, source, fields)
    elif event_id is None:
        missing = action.templates["event_id"].missing(fields)
        raise Skipped(f"event_id: {{{missing}}} is absent from the postback")
    properties: dict[str, Any] = {}
    value_text = rendered.pop("value")
    if value_text is not None:
        properties["value"] = _value(action, value_text)
    code = rendered.pop("currency")
    if code is not None:
        checked = iso_currency(code)
        if checked is None:
            raise Skipped("currency: is not an ISO 4217 code TikTok accepts")
        properties["currency"] = checked
    if "value" in properties and "currency" not in properties:
        raise Skipped("currency: required with a value (template it, or send {currency})")
    for key in PROPERTY_TEMPLATES:
        text = rendered.pop(key)
        if text is not None:
            properties[key] = text
    contents = _contents(action, fields)
    if contents:
        properties["contents"] = contents
    raw: dict[str, Any] = {"event_id": event_id}
    page_parts = (("url", rendered.pop("page_url")), ("referrer", rendered.pop("referrer")))
    page = {key: text for key, text in page_parts if text}
    if page:
        raw["page"] = page
    user = {key: text for key in USER_TEMPLATES if (text := rendered.pop(key)) is not None}
    if user:
        raw["user"] = user
    if properties:
        raw["properties"] = properties
    for key in ("test_event_code", "event_time"):
        if (text := rendered.pop(key)) is not None:
            whole = key == "event_time" and text.isascii() and text.isdigit() and len(text) < 20
            raw[key] = int(text) if whole else text  # '²'.isdigit(), but int('²') fails
    return tuple(Built(action.pixel, {"event": name, **raw}) for name in action.events)


def _value(action: Action, text: str) -> str:
    """The value as a decimal string; a lone placeholder's field that is no number is the
    sender's fault (NotANumber: 400), any other non-number skips the rule."""
    template = action.templates["value"]
    try:
        amount = number("value", text)
    except NotANumber:
        if len(template.fields) == 1 and template.parts == ("", ""):
            raise NotANumber(template.fields[0]) from None
        raise Skipped("value: is not a number") from None
    if amount < 0:
        raise Skipped("value: is negative")
    return format(amount, "f")


def _contents(action: Action, fields: Mapping[str, str]) -> list[dict[str, str]]:
    if not action.contents:
        return []
    item = {}
    for key, template in action.contents.items():
        text = template.render(fields)
        if text:
            item[key] = text.strip()
    return [item] if "content_id" in item else []


def _only_field(template: Template) -> str | None:
    """The field a template is nothing but, or None."""
    return template.fields[0] if template.parts == ("", "") else None


def derived_event_id(rule: str, source: str, fields: Mapping[str, str]) -> str:
    """The same id for the same postback (a platform's retry), different for another."""
    material = json.dumps([source, rule, sorted(fields.items())], ensure_ascii=False)
    return "pb-" + hashlib.sha256(material.encode()).hexdigest()[:32]


def fields_read(rule: Rule) -> list[str]:
    """Every postback field the rule reads: trigger, filters, price, templates."""
    names = ["trigger", *(f.field for f in rule.filters)]
    if rule.price is not None:
        names.append(rule.price.field)
    names.extend(placeholders(rule))
    return list(dict.fromkeys(names))


def placeholders(rule: Rule) -> Sequence[str]:
    """Every field the rule's templates name (for configuration checks)."""
    names = [n for t in rule.action.templates.values() for n in t.fields]
    names.extend(n for t in rule.action.contents.values() for n in t.fields)
    return names
