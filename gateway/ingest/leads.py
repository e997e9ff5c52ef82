"""Between the ingest path and the lead-context store: what browser events leave behind,
and what backend events (postbacks, server-to-server) get from it.

Browser events are read after they are stored (an accept hook), already normalised: their
`external_id` is a SHA-256 digest, `order_id` and configured properties are plain values.
Backend events are read before parsing, as raw input: whatever the sender gave wins,
because the context only becomes `Observed`, which completes and never overrides.

Anyone can send a beacon, so what a browser claims is bounded (the threat model:
docs/design/lead-context.md): an entry belongs to the visitor who wrote it (the store refuses
another visitor's write), a beacon leaves at most `MAX_BROWSER_KEYS` keys, and one client
address leaves at most `context_new_per_minute` new ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.core.event import Event
from gateway.http.rate_limit import Budget, LocalBuckets, client_key
from gateway.ingest.policy import Item, Observed, SourcePolicy
from gateway.settings import Settings
from gateway.storage.backend import Backend
from gateway.storage.leads import context_key
from gateway.storage.leads.base import ContextStore, KeyHasher, LeadContext

_MAX_KEYS = 8
MAX_BROWSER_KEYS = 4
"""Identity keys one beacon may leave (all its events together): a visitor's page names its
lead, order and user id; a beacon naming dozens is somebody seeding entries."""
_RECENT_KEYS = 65_536


@dataclass(frozen=True, slots=True)
class Filled:
    """What the context gave one backend event, and how its click id stands."""

    observed: Observed | None
    url: str | None
    click: str
    """"given" (the sender sent it), "context", "expired" (older than the window),
    or "missing"."""


class LeadMemory:
    """Remembers browser context under identity keys; fills it into backend events."""

    def __init__(
        self,
        store: ContextStore,
        hasher: KeyHasher,
        *,
        keys: Sequence[str],
        window_seconds: float,
        new_per_minute: int = 0,
    ) -> None:
        self.store = store
        self._hasher = hasher
        self._properties = tuple(k for k in keys if k != "external_id")
        self._use_external_id = "external_id" in keys
        self._keys = tuple(keys)
        self._window = window_seconds
        self._new_keys = (
            LocalBuckets(Budget(new_per_minute / 60.0, new_per_minute)) if new_per_minute else None
        )
        self._recent: dict[str, None] = {}
        """Keys this process admitted lately (oldest first): writing one again is a refresh
        of the visitor's own entry, not a new entry, and is not charged to the address."""

    # --- browser events ------------------------------------------------------------------

    def accepted(self, events: Sequence[Event], policy: SourcePolicy) -> None:
        """Accept hook: remember the context of browser events that carry an identity key,
        within the bounds on what one beacon and one address may leave."""
        if policy.name != "browser":
            return
        entries: list[tuple[str, LeadContext]] = []
        admitted: set[str] = set()
        for event in events:
            keys = self._stored_keys(event)
            if keys:
                keys = self._admitted(keys, admitted, event)
            if not keys:
                continue
            user = event.user
            ttclid = user.get("ttclid")
            observed = event.observed
            visitor = observed.visitor if isinstance(observed, Observed) else ""
            context = LeadContext(
                ttclid=ttclid,
                ttclid_at=self._clicked_at(event, ttclid) if ttclid else None,
                ttp=user.get("ttp"),
                ip=user.get("ip"),
                user_agent=user.get("user_agent"),
                url=event.page.get("url"),
                locale=user.get("locale"),
                visitor=self._hasher.of_visitor(visitor) if visitor else None,
            )
            entries.extend((key, context) for key in keys)
        if entries:
            self.store.remember(entries)

    def _admitted(self, keys: list[str], admitted: set[str], event: Event) -> list[str]:
        """The keys of one event this beacon may write: those it already wrote, then new
        ones up to the beacon's bound while the client address has budget for new keys."""
        tally = self.store.stats.browser_keys
        out: list[str] = []
        for key in keys:
            if key in admitted:
                out.append(key)
                continue
            if len(admitted) >= MAX_BROWSER_KEYS:
                outcome = "beyond_bound"
            elif not self._budget_allows(key, event):
                outcome = "rate_limited"
            else:
                admitted.add(key)
                out.append(key)
                outcome = "remembered"
            tally[outcome] = tally.get(outcome, 0) + 1
        return out

    def _budget_allows(self, key: str, event: Event) -> bool:
        """Whether `key` may be written: known to this process lately (a refresh), or new
        and within the client address's budget of new keys."""
        buckets, recent = self._new_keys, self._recent
        if buckets is None:
            return True
        if key in recent:
            del recent[key]  # to the end: the most recently written
            recent[key] = None
            return True
        observed = event.observed
        ip = observed.ip if isinstance(observed, Observed) else event.user.get("ip")
        if buckets.wait(client_key(ip)) > 0:
            return False
        if len(recent) >= _RECENT_KEYS:
            del recent[next(iter(recent))]
        recent[key] = None
        return True

    def _clicked_at(self, event: Event, ttclid: str) -> float:
        """When the click happened, as the source saw it (the signed cookie's time); else
        now: the first sight of a click is the latest it can have happened."""
        observed = event.observed
        if isinstance(observed, Observed) and observed.ttclid == ttclid and observed.ttclid_at:
            return observed.ttclid_at
        return self.store.clock()

    def _stored_keys(self, event: Event) -> list[str]:
        properties = event.properties
        if properties.keys().isdisjoint(self._properties) and not (
            self._use_external_id and "external_id" in event.user
        ):
            return []  # most events name no lead: decided without a loop
        keys: list[str] = []
        if self._use_external_id:
            keys.extend(self._hasher.of_digest(d) for d in event.user.get("external_id", ()))
        for name in self._properties:
            value = event.properties.get(name)
            if isinstance(value, str | int) and not isinstance(value, bool):
                hashed = self._hasher.of_value(str(value))
                if hashed:
                    keys.append(hashed)
        return keys[:_MAX_KEYS]

    # --- backend events ------------------------------------------------------------------

    def keys_of(self, raw: Any, extra: Mapping[str, str] | None = None) -> list[str]:
        """Hashed identity keys of a raw input event, and of a postback's own fields."""
        values: list[str] = []
        if extra:
            values.extend(extra[k] for k in self._keys if extra.get(k))
        if isinstance(raw, dict):
            user, properties = raw.get("user"), raw.get("properties")
            if self._use_external_id and isinstance(user, dict):
                given = user.get("external_id")
                values.extend(v for v in _listed(given) if isinstance(v, str))
            if isinstance(properties, dict):
                values.extend(
                    str(v)
                    for k in self._properties
                    if isinstance(v := properties.get(k), str | int) and not isinstance(v, bool)
                )
        hashed = (self._hasher.of_value(v) for v in dict.fromkeys(values))
        return [h for h in hashed if h][:_MAX_KEYS]

    async def fill_items(self, items: Sequence[Item]) -> int:
        """Each backend item that names a lead the browser showed gets that context where
        it leaves it out (the server API, the relay, file imports; postbacks fill their own
        way), all in one read of the store. Returns how many items got a context."""
        key_lists = [self.keys_of(item.raw) for item in items]
        if not any(key_lists):
            return 0
        contexts = await self.store.lookup_each(key_lists)
        filled = 0
        for item, context in zip(items, contexts, strict=True):
            if context is not None:
                result = self._filled(context, item.raw)
                item.observed = result.observed
                item.raw = with_url(item.raw, result.url)
                filled += 1
        return filled

    async def fill(self, keys: Sequence[str], given: Iterable[Any]) -> Filled:
        """The context for `keys`, as `Observed` for events like `given` (raw events)."""
        context = await self.store.lookup(keys) if keys else None
        return self._filled(context, *given)

    def _filled(self, context: LeadContext | None, *given: Any) -> Filled:
        sent_click = any(_click_of(raw) for raw in given)
        if context is None:
            return Filled(None, None, "given" if sent_click else "missing")
        click, ttclid = "missing", None
        if context.ttclid:
            at = context.ttclid_at or 0.0
            fresh = self.store.clock() - at <= self._window
            click, ttclid = ("context", context.ttclid) if fresh else ("expired", None)
        observed = Observed(
            ip=context.ip,
            user_agent=context.user_agent,
            ttp=context.ttp,
            ttclid=ttclid,
            locale=context.locale,
        )
        return Filled(observed, context.url, "given" if sent_click else click)


def with_url(raw: dict[str, Any], url: str | None) -> dict[str, Any]:
    """The raw event with the remembered page URL when it has none of its own."""
    page = raw.get("page")
    if url is None or (isinstance(page, dict) and page.get("url")):
        return raw
    return {**raw, "page": {**(page if isinstance(page, dict) else {}), "url": url}}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value] if value is not None else []


def _click_of(raw: Any) -> bool:
    user = raw.get("user") if isinstance(raw, dict) else None
    return bool(isinstance(user, dict) and user.get("ttclid"))


def lead_memory(
    settings: Settings, backend: Backend, *, clock: Callable[[], float] = time.time
) -> LeadMemory:
    """The lead store in the storage backend (not yet open), and how events use it."""
    postbacks = settings.postbacks
    window = postbacks.context_days * 86400.0
    store = backend.lead_store(
        ttl_seconds=window, max_entries=postbacks.context_max_entries, clock=clock
    )
    hasher = KeyHasher(context_key(settings))
    return LeadMemory(
        store,
        hasher,
        keys=postbacks.context_keys,
        window_seconds=window,
        new_per_minute=postbacks.context_new_per_minute,
    )
