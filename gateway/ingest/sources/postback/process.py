"""One postback, start to end: rules → events (with the lead's browser context) → outbox.

Shared by the HTTP endpoint and `tiktok-gateway postback-test`, so a dry run shows exactly
what a live postback would store. A rule that matches but whose event the parser refuses
(a web event without a page URL, an `event_time` out of range) is skipped with the
parser's reason, counted and logged; the other rules still fire. Only a fault of the
sender that no rule can get past — a price that is no number where a rule compares it —
refuses the postback (400), so the platform shows the error instead of retrying forever.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.errors import EventError
from gateway.core.event import Destination, Event, request_body
from gateway.ingest.leads import Filled, LeadMemory, with_url
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.policy import Item, SourcePolicy
from gateway.ingest.sources.postback.request import is_unfilled_macro, sender_name
from gateway.privacy.masking import short, shown_element
from gateway.settings import PixelConfig, PostbackSource
from gateway.settings.tracking.conditions import NotANumber
from gateway.settings.tracking.rules import Built, RuleSet, Unmatched
from gateway.storage.postback_log import PostbackLog, loggable

log = logging.getLogger(__name__)
POSTBACK = SourcePolicy("postback")
_CLICK = re.compile(r"[A-Za-z0-9._~-]{8,512}")


@dataclass(frozen=True)
class FiredRule:
    rule: str
    events: list[Event]


@dataclass
class PostbackResult:
    """What one postback became: rules fired with their events, the others with reasons."""

    source: str
    trigger: str | None
    fired: list[FiredRule] = field(default_factory=list)
    unmatched: list[Unmatched] = field(default_factory=list)
    click: str = "missing"
    """given, context, expired (older than the window), malformed or missing."""
    stored: bool = False
    origins: dict[str, str] = field(default_factory=dict)
    """Where each server-side value came from: "postback" or "lead context"."""

    @property
    def events(self) -> list[Event]:
        return [event for rule in self.fired for event in rule.events]

    def answer(self, *, requests: bool = False, masked: bool = True) -> dict[str, Any]:
        """The JSON answer; for a dry run also the Events API requests, masked as the console
        shows them (an endpoint never hands the lead context back), and where each value
        came from. `masked=False` is for the operator's own `postback-test`, which sends them."""
        body: dict[str, Any] = {
            "source": self.source,
            "trigger": self.trigger,
            "stored": len(self.events) if self.stored else 0,
            "fired": [
                {
                    "rule": fired.rule,
                    "events": [
                        {
                            "event": e.event,
                            "event_id": e.event_id,
                            "pixel": e.destination.event_source_id,
                        }
                        for e in fired.events
                    ],
                }
                for fired in self.fired
            ],
            "not_fired": [{"rule": u.rule, "reason": u.reason} for u in self.unmatched],
            "ttclid": self.click,
        }
        if requests:
            bodies = tiktok_requests(self.events)
            if masked:
                bodies = [{**b, "data": [self._shown(e) for e in b["data"]]} for b in bodies]
            body["requests"] = bodies
            body["from"] = self.origins
        return body

    def _shown(self, element: dict[str, Any]) -> dict[str, Any]:
        """As the console shows it; what the lead context gave is never shown whole."""
        shown = shown_element(element)
        user = shown.get("user")
        if isinstance(user, dict):
            for key in ("user_agent", "locale", "ttclid", "ttp"):
                if self.origins.get(key) == "lead context" and isinstance(user.get(key), str):
                    user[key] = short(user[key], 6)
        page = shown.get("page")
        if self.origins.get("page.url") == "lead context" and isinstance(page, dict):
            url = page.get("url")
            if isinstance(url, str):
                page["url"] = url.partition("?")[0] + ("?…" if "?" in url else "")
        return shown


def _usable(fields: Mapping[str, str]) -> tuple[Mapping[str, str], int, bool]:
    """The fields without unfilled macros and a click id TikTok would refuse (absent: never
    sent, never in place of the lead context's); how many macros; whether the click was."""
    unfilled = [name for name, value in fields.items() if is_unfilled_macro(value)]
    given = fields.get("ttclid")
    bad_click = bool(given) and "ttclid" not in unfilled and not _CLICK.fullmatch(given or "")
    if not unfilled and not bad_click:
        return fields, 0, False
    dropped = {*unfilled, *(["ttclid"] if bad_click else [])}
    usable = {name: value for name, value in fields.items() if name not in dropped}
    return usable, len(unfilled), bad_click


_ORIGIN_KEYS = ("ip", "user_agent", "ttp", "ttclid", "locale")


def _origins(fields: Mapping[str, str], filled: Filled) -> dict[str, str]:
    """Which server-side values the sender gave and which the lead context filled in."""
    found: dict[str, str] = {}
    observed = filled.observed
    for key in _ORIGIN_KEYS:
        if fields.get(key):
            found[key] = "postback"
        elif observed is not None and getattr(observed, key):
            found[key] = "lead context"
    if fields.get("url"):
        found["page.url"] = "postback"
    elif filled.url:
        found["page.url"] = "lead context"
    return found


def _log_entry(
    at: float,
    outcome: PostbackResult,
    fields: Mapping[str, str],
    rules: RuleSet,
    source: PostbackSource,
) -> dict[str, Any]:
    """The postback log's entry: the answer, and the fields as the log keeps them."""
    read = rules.read_fields.union(source.fields, source.rename.values())
    kept = loggable(fields, rules.identifier_fields, read)
    return {"at": at, **outcome.answer(), "fields": kept}


def tiktok_requests(events: list[Event]) -> list[dict[str, Any]]:
    """The Events API bodies these events would be sent in, one per destination."""
    by_destination: dict[Destination, list[Event]] = {}
    for event in events:
        by_destination.setdefault(event.destination, []).append(event)
    return [request_body(d, group) for d, group in by_destination.items()]


class PostbackProcessor:
    """Evaluates rules, fills in the lead context, parses and stores the events."""

    def __init__(
        self,
        pipeline: Pipeline,
        leads: LeadMemory | None = None,
        journal: PostbackLog | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._leads = leads
        self._journal = journal
        metrics = pipeline.metrics
        self._counted = metrics.postbacks
        self._skipped = metrics.postback_rules_skipped
        self._unfilled = metrics.postback_unfilled_macros
        self._tallies: dict[tuple[str, str], Any] = {}  # the counter's children, looked up once

    @property
    def pixels(self) -> Mapping[str, PixelConfig]:
        """The pixel table now (see `process`)."""
        return self._pipeline.pixels

    async def process(
        self,
        source: PostbackSource,
        fields: Mapping[str, str],
        rules: RuleSet,
        *,
        store: bool = True,
        pixels: Mapping[str, PixelConfig] | None = None,
    ) -> PostbackResult:
        """Raises EventError (400) for a price that is no number, OutboxUnavailable (503).

        `pixels`: the pixel table taken with `rules` (`self.pixels`, before any await), so
        a reload while the lead context is read cannot judge old rules by a new table."""
        fields, unfilled, bad_click = _usable(fields)
        if unfilled and store:
            self._unfilled.labels(source.name).inc(unfilled)
        try:
            evaluation = rules.evaluate(source.name, fields)
        except NotANumber as exc:
            self._counted.labels(source.name, "invalid").inc()
            raise EventError(sender_name(source, exc.field), "is not a number") from None
        outcome = PostbackResult(source.name, fields.get("trigger") or None)
        outcome.unmatched.extend(evaluation.unmatched)
        built = [b for fired in evaluation.fired for b in fired.events]
        filled = await self._fill(fields, built)
        outcome.click = "malformed" if bad_click else filled.click
        outcome.origins = _origins(fields, filled)
        groups = [self._items(fired.events, filled, pixels) for fired in evaluation.fired]
        results = await self._pipeline.ingest_each(groups, POSTBACK, store=store)
        for fired, result in zip(evaluation.fired, results, strict=True):
            if isinstance(result, EventError):
                reason = f"{result.field}: {result.message}"
                outcome.unmatched.append(Unmatched(fired.rule, reason, skipped=True))
            else:
                outcome.fired.append(FiredRule(fired.rule, result))
        outcome.stored = store and bool(outcome.events)
        if len(outcome.unmatched) > 1:  # in the order of the configuration
            order = {rule.name: index for index, rule in enumerate(rules.rules)}
            outcome.unmatched.sort(key=lambda unmatched: order.get(unmatched.rule, 0))
        for unmatched in outcome.unmatched:
            if unmatched.skipped and store:
                self._skipped.labels(source.name).inc()
                log.info(
                    "postback from %s: rule %r skipped: %s",
                    source.name,
                    unmatched.rule,
                    unmatched.reason,
                )
        if store:
            self._tally(source.name, "fired" if outcome.fired else "none")
            if self._journal is not None:  # built when written, if it is still among the last
                now = self._pipeline.now()
                entry = functools.partial(_log_entry, now, outcome, fields, rules, source)
                self._journal.record(source.name, entry)
        return outcome

    def _tally(self, source: str, outcome: str) -> None:
        child = self._tallies.get((source, outcome))
        if child is None:
            child = self._tallies[source, outcome] = self._counted.labels(source, outcome)
        child.inc()

    async def _fill(self, fields: Mapping[str, str], built: list[Built]) -> Filled:
        raws = [b.raw for b in built]
        if self._leads is None:
            return Filled(None, None, "given" if fields.get("ttclid") else "missing")
        keys: list[str] = []  # looked up even when nothing fired: the log tells the click
        for raw in raws or [{}]:
            keys.extend(k for k in self._leads.keys_of(raw, fields) if k not in keys)
        return await self._leads.fill(keys, raws)

    def _items(
        self, built: tuple[Built, ...], filled: Filled, pixels: Mapping[str, PixelConfig] | None
    ) -> list[Item]:
        return [
            Item(
                with_url(b.raw, filled.url),
                self._pipeline.pixel(b.pixel, "pixel", table=pixels),
                observed=filled.observed,
            )
            for b in built
        ]
