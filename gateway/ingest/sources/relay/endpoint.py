"""The relay's HTTP side: TikTok's paths, TikTok's `Access-Token`, TikTok's envelope.

Every answer is HTTP 200 with TikTok's envelope, as clients written against TikTok parse it:
code 0 only once every event of the request is durably in the outbox; 40105 for a token that
is neither a configured pixel's nor a gateway API key; 40001 for a token of another pixel;
40002 naming the field for anything invalid, the whole request refused (as TikTok does for
2.0); 50002 with `Retry-After` when the outbox cannot store now. Errors are rendered by
`http/errors.TikTokEnvelope` behind the endpoint's boundary, so not even a bug answers 500.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.core.errors import (
    EventError,
    Forbidden,
    MethodNotAllowed,
    PayloadTooLarge,
    Unauthorized,
)
from gateway.http.auth import ServerCallers
from gateway.http.errors import TikTokEnvelope
from gateway.http.failed_auth import FailedAuthLimit
from gateway.http.rate_limit import RateLimit
from gateway.http.request_body import parse_json, read_body
from gateway.ingest.leads import LeadMemory
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.policy import Item, SourcePolicy
from gateway.ingest.sources.relay.fixups import KINDS, count_fixups
from gateway.ingest.sources.relay.translate import RelayRequest, legacy_field
from gateway.settings import PixelConfig, Settings

RELAY = SourcePolicy("relay")
"""Server-to-server: the sender's clock is trusted (within the skew), a missing event_id is
derived from the event's content so a retried request deduplicates."""
Reader = Callable[[Any], RelayRequest]
_BAD_TOKEN = "Access token is incorrect or has been revoked."
_NO_SCOPE = "No permission to operate on this event source with this access token."

log = logging.getLogger(__name__)


class RelayEndpoint:
    """One instance for all of TikTok's paths; tokens, keys and limits precomputed once."""

    def __init__(
        self,
        pipeline: Pipeline,
        leads: LeadMemory | None = None,
        *,
        answers: TikTokEnvelope | None = None,
        limit: RateLimit | None = None,
        failed: FailedAuthLimit | None = None,
    ) -> None:
        """`leads` fills in the browser context of events that name a lead it showed;
        `answers` is the renderer of the paths' errors, so success and errors share its ids;
        `limit`: the server API's per-client limit, and `failed`: the budget of failed
        authentications, both checked before the token is."""
        settings = pipeline.settings
        self._callers = (
            ServerCallers(settings, limit, failed, "relay")
            if limit is not None and failed is not None
            else None
        )
        self._pipeline = pipeline
        self._leads = leads
        self._answers = answers or TikTokEnvelope()
        self._keys = tuple(k.reveal().encode() for k in settings.server_api.api_keys)
        self._access = _Access.of(settings.pixels, self._keys)
        self._max_body = settings.relay.max_body_bytes
        self._max_events = settings.relay.max_events
        self._fixups = pipeline.metrics.relay_fixups
        for kind in KINDS:  # every kind shown from the start, at 0
            self._fixups.setdefault(kind, 0)

    def reconfigure(self, settings: Settings) -> None:
        """Take a reloaded configuration's pixels and tokens (one reference, read once per
        request: a request is judged by the old table or the new, never both)."""
        self._access = _Access.of(settings.pixels, self._keys)

    async def handle(self, request: Request, read: Reader) -> Response:
        if request.method != "POST":
            raise MethodNotAllowed("use POST")
        if self._callers is not None:
            await self._callers.count(request)  # before the token: no free guesses
        access = self._access
        token = request.headers.get("access-token", "").strip().encode()
        # the token first, before the body is even read: a stranger costs nothing
        if not token or not any([hmac.compare_digest(token, t) for t in access.all]):
            if self._callers is not None:
                await self._callers.failed(request)
            raise Unauthorized(_BAD_TOKEN)
        length = request.headers.get("content-length")
        relayed = read(parse_json(await read_body(request.receive, length, self._max_body)))
        if len(relayed.events) > self._max_events:
            where = relayed.indexed or "body"
            raise PayloadTooLarge(where, f"more than {self._max_events} events in one request")
        pixel = self._destination(relayed, token, access)
        pairs = zip(relayed.events, relayed.codes, strict=True)
        items = [Item(raw, pixel, test_event_code=code) for raw, code in pairs]
        if self._leads is not None:
            await self._leads.fill_items(items)
        try:
            await self._pipeline.ingest(items, RELAY, indexed=relayed.indexed)
        except EventError as exc:
            if not relayed.legacy:
                raise
            raise type(exc)(legacy_field(exc.field), exc.message) from None
        for kind, count in count_fixups(relayed.events, legacy=relayed.legacy).items():
            self._fixups[kind] += count
        if relayed.ignored:  # the names only, never their values
            self._fixups["unknown_field_ignored"] += len(relayed.ignored)
            log.debug("relay: fields no mapping reads, ignored: %s", ", ".join(relayed.ignored))
        return self._answers.ok()

    def _destination(self, relayed: RelayRequest, token: bytes, access: _Access) -> PixelConfig:
        """The configured pixel / event set the request addresses, if this token may send."""
        where = relayed.source_id_field
        source_id = relayed.source_id
        if not isinstance(source_id, str) or not source_id.strip():
            raise EventError(where, "required: the pixel code or event set id")
        pixel = access.pixels.get(source_id.strip())
        if pixel is None:  # TikTok: 40002 "Invalid value for event_source_id"
            raise EventError(where, "Invalid value: not an event source of this gateway")
        if not any([hmac.compare_digest(token, t) for t in access.allowed[pixel.id]]):
            raise Forbidden(_NO_SCOPE)
        if pixel.event_source != relayed.event_source:
            # as TikTok names it for a pixel sent as an offline event set: the id, not the kind
            kind = f"a {pixel.event_source} event source, not {relayed.event_source}"
            raise EventError(where, f"Invalid value: {pixel.id} is {kind}")
        return pixel


@dataclass(frozen=True)
class _Access:
    """Who may relay for which pixel: the pixels, what may send to each (the gateway's keys
    and the pixel's own token, built here once rather than on every request), and every
    token or key."""

    pixels: dict[str, PixelConfig]
    allowed: dict[str, tuple[bytes, ...]]
    all: tuple[bytes, ...]

    @classmethod
    def of(cls, pixels: Sequence[PixelConfig], keys: tuple[bytes, ...]) -> _Access:
        tokens = {p.id: p.access_token.reveal().encode() for p in pixels}
        every = tuple(t for t in dict.fromkeys([*tokens.values(), *keys]) if t)
        allowed = {pixel: (*keys, token) for pixel, token in tokens.items()}
        return cls({p.id: p for p in pixels}, allowed, every)
