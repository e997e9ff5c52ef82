"""The relay's HTTP side: TikTok's paths, TikTok's `Access-Token`, TikTok's envelope.

Every answer is HTTP 200 with TikTok's envelope, as clients written against TikTok parse it:
code 0 only once every event of the request is durably in the outbox; 40105 for a token that
is neither a configured pixel's nor a gateway API key; 40001 for a token of another pixel;
40002 naming the field for anything invalid, the whole request refused (as TikTok does for
2.0); 50002 with `Retry-After` when the outbox cannot store now. Errors are rendered by
`http/errors.TikTokEnvelope` behind the endpoint's boundary, so not even a bug answers 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.core.errors import (
    EventError,
    Forbidden,
    MethodNotAllowed,
    PayloadTooLarge,
)
from gateway.http.auth import Auth, Gate
from gateway.http.errors import TikTokEnvelope
from gateway.http.request_body import parse_json, read_body
from gateway.ingest.leads import LeadMemory
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.policy import Item, SourcePolicy
from gateway.ingest.sources.relay.fixups import KINDS, count_fixups
from gateway.ingest.sources.relay.translate import RelayRequest, legacy_field
from gateway.settings import PixelConfig, pick_pixel

RELAY = SourcePolicy("relay")
"""Server-to-server: the sender's clock is trusted (within the skew), a missing event_id is
derived from the event's content so a retried request deduplicates."""
Reader = Callable[[Any], RelayRequest]
_BAD_TOKEN = "Access token is incorrect or has been revoked."
_NO_SCOPE = "No permission to operate on this event source with this access token."
_NOT_OURS = "Invalid value: not an event source of this gateway"

log = logging.getLogger(__name__)


class RelayEndpoint:
    """One instance for all of TikTok's paths; limits read once."""

    def __init__(
        self,
        pipeline: Pipeline,
        auth: Auth,
        gate: Gate,
        leads: LeadMemory | None = None,
        *,
        answers: TikTokEnvelope | None = None,
    ) -> None:
        """`auth` holds the tokens and keys now (reloaded with the pixels); `gate` checks
        the client's limits before the token and counts wrong ones; `leads` fills in the
        browser context of events that name a lead it showed; `answers` is the renderer of
        the paths' errors, so success and errors share its ids."""
        settings = pipeline.settings
        self._pipeline = pipeline
        self._auth = auth
        self._gate = gate
        self._leads = leads
        self._answers = answers or TikTokEnvelope()
        self._max_body = settings.relay.max_body_bytes
        self._max_events = settings.relay.max_events
        self._fixups = pipeline.metrics.relay_fixups
        for kind in KINDS:  # every kind shown from the start, at 0
            self._fixups.setdefault(kind, 0)

    async def handle(self, request: Request, read: Reader) -> Response:
        if request.method != "POST":
            raise MethodNotAllowed("use POST")
        await self._gate.check(request)  # before the token: no free guesses
        # the tokens and the pixels, taken together (a reload swaps both at once) and kept
        # for the request: it is judged by the old configuration or the new, never both
        credentials, pixels = self._auth.current, self._pipeline.pixels
        token = request.headers.get("access-token", "").strip().encode()
        # the token first, before the body is even read: a stranger costs nothing
        if not credentials.relay_token(token):
            await self._gate.refuse(request, _BAD_TOKEN)
        length = request.headers.get("content-length")
        relayed = read(parse_json(await read_body(request.receive, length, self._max_body)))
        if len(relayed.events) > self._max_events:
            where = relayed.indexed or "body"
            raise PayloadTooLarge(where, f"more than {self._max_events} events in one request")
        pixel = _destination(relayed, pixels, lambda p: credentials.may_relay(token, p.id))
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


def _destination(
    relayed: RelayRequest,
    pixels: Mapping[str, PixelConfig],
    may_send: Callable[[PixelConfig], bool],
) -> PixelConfig:
    """The configured pixel / event set the request addresses, if the token may send."""
    where = relayed.source_id_field
    source_id = relayed.source_id
    if not isinstance(source_id, str) or not source_id.strip():
        raise EventError(where, "required: the pixel code or event set id")
    # TikTok: 40002 "Invalid value for event_source_id"
    pixel = pick_pixel(pixels, source_id.strip(), where, unknown=_NOT_OURS)
    if not may_send(pixel):
        raise Forbidden(_NO_SCOPE)
    if pixel.event_source != relayed.event_source:
        # as TikTok names it for a pixel sent as an offline event set: the id, not the kind
        kind = f"a {pixel.event_source} event source, not {relayed.event_source}"
        raise EventError(where, f"Invalid value: {pixel.id} is {kind}")
    return pixel
