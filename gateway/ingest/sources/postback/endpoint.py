"""The postback endpoint: a URL a lead system can be given, whatever it can send.

    GET|POST /v1/postbacks/{source}?key=<secret>&trigger=lead_sold&lead_id=…  (POST: form, JSON)

The source's secret travels in the URL (`key`), or the API key in a header. The answer is
JSON: the rules fired with their event ids, and why the others did not; firing nothing is
still 200 (retrying will not make a rule match); `dry_run=1` stores nothing. Rules and pixels
are taken together per request from what a reload replaces whole (docs/design/postbacks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.http.auth import Auth, Gate
from gateway.http.errors import GatewayJson, JsonAnswer, rendered
from gateway.http.request_body import read_body
from gateway.ingest.policy import SourcePolicy
from gateway.ingest.source import SourceContext
from gateway.ingest.sources.postback.process import POSTBACK, PostbackProcessor
from gateway.ingest.sources.postback.request import body_fields, our_fields, query_fields
from gateway.settings import PostbackSettings, PostbackSource, Settings
from gateway.settings.live import LiveSettings

PATH = "/v1/postbacks/{source}"
_TRUE = frozenset({"1", "true", "yes"})


def postback_url(base: str, source: PostbackSource, macros: dict[str, str]) -> str:
    """The URL to paste into a lead system: its secret, then our fields with its macros."""
    query = "&".join(f"{name}={macro}" for name, macro in macros.items())
    key = quote(source.secret.reveal(), safe="")  # a secret with + / = must survive the URL
    url = f"{base.rstrip('/')}/v1/postbacks/{source.name}?key={key}"
    return f"{url}&{query}" if query else url


class PostbackEndpoint:
    def __init__(
        self, processor: PostbackProcessor, live: LiveSettings, auth: Auth, gate: Gate
    ) -> None:
        """`gate` checks the client's limits before the key and counts wrong keys; `auth`
        holds the sources' secrets, reloaded with the rules."""
        self._processor = processor
        self._auth = auth
        self._gate = gate
        self._config = live.current.postbacks
        live.on_reload(self._reconfigure)

    def _reconfigure(self, settings: Settings) -> None:
        self._config = settings.postbacks  # one reference: a request sees the old or the new

    async def handle(self, request: Request) -> Response:
        await self._gate.check(request)
        # the rules, their secrets and the pixel table they name, taken together (no await
        # between: a reload swaps them at once), then kept while the body and the lead
        # context arrive
        config: PostbackSettings = self._config
        credentials = self._auth.current
        pixels = self._processor.pixels
        given = query_fields(request.scope["query_string"].decode("latin-1"))
        source = config.sources.get(request.path_params["source"])
        if source is None or not credentials.postback(source.name, given.get("key"), request):
            await self._gate.refuse(request, "unknown source, or a wrong or missing key")
        if request.method == "POST":
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            length = request.headers.get("content-length")
            body = await read_body(request.receive, length, config.max_body_bytes)
            given.update(body_fields(media, body))
        dry_run = given.get("dry_run", "").lower() in _TRUE
        fields = our_fields(source, given)
        outcome = await self._processor.process(
            source, fields, config.rules, store=not dry_run, pixels=pixels
        )
        return JsonAnswer(orjson.dumps(outcome.answer(requests=dry_run)))


@dataclass(frozen=True)
class LeadPostbackSource:
    """Lead systems' postbacks (`PostbackSource` is the configuration of one of them)."""

    name: str = "postback"
    policy: SourcePolicy = POSTBACK

    def routes(self, context: SourceContext) -> list[BaseRoute]:
        processor = PostbackProcessor(context.pipeline, context.leads, context.postback_log)
        gate = context.auth.gate("postback", context.limits.postback)
        endpoint = PostbackEndpoint(processor, context.live, context.auth, gate)
        return [Route(PATH, rendered(endpoint.handle, GatewayJson()), methods=["GET", "POST"])]


SOURCE = LeadPostbackSource()
