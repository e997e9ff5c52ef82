"""The postback endpoint: a URL a lead system can be given, whatever it can send.

    GET|POST /v1/postbacks/{source}?key=<secret>&trigger=lead_sold&lead_id=…  (POST: form, JSON)

The source's secret travels in the URL (`key`), or the API key in a header. The answer is
JSON: the rules fired with their event ids, and why the others did not; firing nothing is
still 200 (retrying will not make a rule match); `dry_run=1` stores nothing. Rules and pixels
are taken together per request from what a reload replaces whole (docs/design/postbacks.md).
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.core.errors import Unauthorized
from gateway.http.auth import ServerCallers, authorised
from gateway.http.errors import GatewayJson, rendered
from gateway.http.failed_auth import FailedAuthLimit
from gateway.http.rate_limit import RateLimit
from gateway.http.request_body import read_body
from gateway.ingest.sources.postback.process import PostbackProcessor
from gateway.ingest.sources.postback.request import body_fields, our_fields, query_fields
from gateway.settings import PostbackSettings, PostbackSource, Settings
from gateway.settings.live import LiveSettings

PATH = "/v1/postbacks/{source}"
_TRUE = frozenset({"1", "true", "yes"})


def postback_url(base: str, source: PostbackSource, macros: dict[str, str]) -> str:
    """The URL to paste into a lead system: its secret, then our fields with its macros."""
    query = "&".join(f"{name}={macro}" for name, macro in macros.items())
    url = f"{base.rstrip('/')}/v1/postbacks/{source.name}?key={source.secret.reveal()}"
    return f"{url}&{query}" if query else url


class PostbackEndpoint:
    def __init__(
        self,
        processor: PostbackProcessor,
        live: LiveSettings,
        limit: RateLimit,
        failed: FailedAuthLimit,
    ) -> None:
        """`limit` counts requests and `failed` wrong keys per client, both checked before
        the key (no free guesses)."""
        settings = live.current
        self._processor = processor
        self._callers = ServerCallers(settings, limit, failed, "postback")
        self._api_keys = tuple(k.reveal().encode() for k in settings.server_api.api_keys)
        self._config = settings.postbacks
        live.on_reload(self._reconfigure)

    def _reconfigure(self, settings: Settings) -> None:
        self._config = settings.postbacks  # one reference: a request sees the old or the new

    async def handle(self, request: Request) -> Response:
        await self._callers.count(request)
        # the rules and the pixel table they name, taken together (no await between: a
        # reload swaps both at once), then kept while the body and the lead context arrive
        config: PostbackSettings = self._config
        pixels = self._processor.pixels
        given = query_fields(request.scope["query_string"].decode("latin-1"))
        source = config.sources.get(request.path_params["source"])
        if source is None or not self._authorised(source, given.get("key"), request):
            await self._callers.failed(request)
            raise Unauthorized("unknown source, or a wrong or missing key")
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
        return JSONResponse(outcome.answer(requests=dry_run), status_code=200)

    def _authorised(self, source: PostbackSource, key: str | None, request: Request) -> bool:
        secret = source.secret.reveal().encode()
        if key is not None:
            return hmac.compare_digest(key.encode(), secret)
        return authorised(request, (secret, *self._api_keys))


def routes(
    processor: PostbackProcessor, live: LiveSettings, limit: RateLimit, failed: FailedAuthLimit
) -> list[BaseRoute]:
    endpoint = PostbackEndpoint(processor, live, limit, failed)
    return [Route(PATH, rendered(endpoint.handle, GatewayJson()), methods=["GET", "POST"])]
