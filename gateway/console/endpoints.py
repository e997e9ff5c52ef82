"""The console's routes: login, the page, its live stream, and the operator's actions.

Every route checks the session, and that no logout revoked it (`storage/revoked_sessions.py`:
a backend that cannot say answers 503); the actions (replay, send a test event) and logout
(`login.py`) also check the CSRF token. A live stream ends once its session is revoked.
Answers never carry the access token or a raw identifier: events are hashed
before they are recorded, and `view` shortens what it shows.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from gateway.console.auth import ConsoleAuth
from gateway.console.live import Watchers
from gateway.console.login import MAX_FORM, Login
from gateway.console.pages import HEADERS, app_page, login_page
from gateway.console.postbacks import MAX_SHOWN, last_postbacks
from gateway.console.search import MAX_QUERY, search
from gateway.console.view import detail
from gateway.core.errors import (
    ConfigError,
    EventError,
    OutboxUnavailable,
)
from gateway.core.score import KEYS, keys_present, score
from gateway.delivery.send_now import TestEvent, send_test
from gateway.http.client_ip import ClientIpResolver
from gateway.privacy.masking import shown_user

if TYPE_CHECKING:  # the Gateway builds the console's replica feed: no import at run time
    from gateway.runtime import Gateway

_ASSETS = {
    "console.js": "text/javascript",
    "search.js": "text/javascript",
    "console.css": "text/css",
}
_TEST_FIELDS = ("event", "email", "phone", "external_id", "ttclid", "url", "value", "currency")


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, HEADERS, media_type="application/json")


def _stored(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[..., Any]:
    """A route that reads the outbox's backend: while it is down (Redis), a 503 the page
    can show and retry, as `/readyz` answers, not a 500."""

    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except OutboxUnavailable as exc:
            headers = {**HEADERS, "Retry-After": str(exc.retry_after_seconds)}
            body = orjson.dumps({"error": "unavailable", "message": str(exc)})
            return Response(body, 503, headers, media_type="application/json")

    return guarded


class Console:
    def __init__(self, gateway: Gateway) -> None:
        settings = gateway.settings.console
        self._gateway = gateway
        self.path = settings.path
        self._auth = ConsoleAuth(settings)
        self._revoked = gateway.revoked_sessions
        self._watchers = Watchers(gateway.recent, gateway.replicas, gateway.drops)
        network = gateway.settings.network
        ips = ClientIpResolver(network.trusted_proxies, network.client_ip_header)
        self._login = Login(gateway, self._auth, ips)

    @property
    def _pixels(self) -> list[str]:
        """The pixels configured now: a reload may have added or removed some."""
        return self._gateway.pipeline.pixel_ids

    def routes(self) -> list[BaseRoute]:
        p = self.path
        return [
            Route(p, _stored(self.index), methods=["GET"]),
            Route(f"{p}/login", self._login.login, methods=["POST"]),
            Route(f"{p}/logout", self._login.logout, methods=["POST"]),
            Route(f"{p}/assets/{{name}}", self.asset, methods=["GET"]),
            Route(f"{p}/stream", _stored(self.stream), methods=["GET"]),
            Route(f"{p}/event", _stored(self.event), methods=["GET"]),
            Route(f"{p}/search", _stored(self.search), methods=["GET"]),
            Route(f"{p}/overview", _stored(self.overview), methods=["GET"]),
            Route(f"{p}/dead-letters", _stored(self.dead_letters), methods=["GET"]),
            Route(f"{p}/postbacks", _stored(self.postbacks), methods=["GET"]),
            Route(f"{p}/replay", _stored(self.replay), methods=["POST"]),
            Route(f"{p}/send-test", _stored(self.send_test), methods=["POST"]),
        ]

    # --- pages and session ---------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        sid = await self._signed_in(request)
        if sid is None:
            return login_page(self.path)
        sources = sorted(self._gateway.live.current.postbacks.sources)
        return app_page(self.path, self._auth.csrf_token(sid), self._pixels, sources)

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        media = _ASSETS.get(name)
        if media is None:
            return _json({"error": "not_found"}, 404)
        text = resources.files("gateway.static").joinpath(name).read_bytes()
        return Response(text, 200, {**HEADERS, "Cache-Control": "no-cache"}, media_type=media)

    async def _signed_in(self, request: Request) -> str | None:
        """The session id of a signed, unexpired and not revoked session cookie, or None."""
        session = self._auth.session(request)
        if session is None or await self._revoked.revoked(session.sid):
            return None
        return session.sid

    async def _action_refused(self, request: Request) -> Response | None:
        sid = await self._signed_in(request)
        if sid is None:
            return _json({"error": "unauthorized", "message": "log in first"}, 401)
        if not self._auth.csrf_ok(request, sid):
            return _json({"error": "forbidden", "message": "missing or wrong CSRF token"}, 403)
        return None

    # --- reading -------------------------------------------------------------------------

    async def stream(self, request: Request) -> Response:
        sid = await self._signed_in(request)
        if sid is None:
            return _json({"error": "unauthorized"}, 401)

        async def alive() -> bool:  # asked each tick: a dict lookup, a read once a second
            try:
                return not await self._revoked.revoked(sid)
            except OutboxUnavailable:  # a session is never accepted unchecked
                return False

        headers = {**HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(
            self._watchers.stream(alive), headers=headers, media_type="text/event-stream"
        )

    async def event(self, request: Request) -> Response:
        if await self._signed_in(request) is None:
            return _json({"error": "unauthorized"}, 401)
        q = request.query_params
        trace = self._gateway.recent.find(q.get("pixel", ""), q.get("event", ""), q.get("id", ""))
        if trace is None:
            return _json({"error": "not_found", "message": "no longer in the buffer"}, 404)
        return _json(detail(trace))

    async def search(self, request: Request) -> Response:
        """What happened to `?q=` (an event_id or an order_id): every place it is kept."""
        if await self._signed_in(request) is None:
            return _json({"error": "unauthorized"}, 401)
        wanted = request.query_params.get("q", "").strip()
        if not wanted or len(wanted) > MAX_QUERY:
            message = f"q: an event_id or an order_id, at most {MAX_QUERY} characters"
            return _json({"error": "invalid", "message": message}, 400)
        return _json(await search(self._gateway, wanted))

    async def overview(self, request: Request) -> Response:
        """Per pixel: the outbox's counts, events per minute over the last hour (every
        replica's with Redis), and from the recent buffer each match key's share and the
        average score."""
        if await self._signed_in(request) is None:
            return _json({"error": "unauthorized"}, 401)
        now = time.time()
        counts = await self._gateway.outbox.counts(now)
        per_minute = await self._gateway.per_minute.per_minute()
        pixels: dict[str, dict[str, Any]] = {}
        for pixel in self._pixels:
            per = counts.pixels.get(pixel)
            pixels[pixel] = {
                "pending": per.pending if per else 0,
                "retrying": per.retrying if per else 0,
                "dead": per.dead if per else 0,
                "per_minute": per_minute.get(pixel, [0] * 60),
                "events": 0,
                "scored": 0,
                "score_sum": 0,
                "keys": Counter[str](),
                "delivered": 0,
                "recovered": self._gateway.recovered.recovered(pixel),
            }
        for trace in self._gateway.recent.latest():
            entry = pixels.get(trace.pixel)
            if entry is None:
                continue
            entry["events"] += 1
            if trace.state == "delivered":
                entry["delivered"] += 1
            if trace.accepted is not None:
                entry["scored"] += 1
                entry["score_sum"] += score(trace.accepted.user)
                entry["keys"].update(keys_present(trace.accepted.user))
        for entry in pixels.values():
            scored = entry.pop("scored")
            total = entry.pop("score_sum")
            keys: Counter[str] = entry.pop("keys")
            entry["average_score"] = round(total / scored, 1) if scored else None
            entry["key_share"] = {k: round(keys[k] / scored, 2) if scored else 0 for k in KEYS}
        return _json({"pixels": pixels, "shared": self._gateway.per_minute.shared})

    async def dead_letters(self, request: Request) -> Response:
        if await self._signed_in(request) is None:
            return _json({"error": "unauthorized"}, 401)
        letters = await self._gateway.outbox.dead_letters(200)
        groups = Counter((d.event.destination.event_source_id, d.code) for d in letters)
        return _json(
            {
                "letters": [
                    {
                        "pixel": d.event.destination.event_source_id,
                        "event": d.event.event,
                        "event_id": d.event.event_id,
                        "code": d.code,
                        "reason": d.reason,
                        "request_id": d.request_id,
                        "attempts": d.attempts,
                        "dead_at": d.dead_at,
                    }
                    for d in letters
                ],
                "groups": [
                    {"pixel": pixel, "code": code, "count": n}
                    for (pixel, code), n in sorted(groups.items(), key=str)
                ],
            }
        )

    async def postbacks(self, request: Request) -> Response:
        """The last postbacks (of `?source=`, or all), each with the rules it fired or why
        not, how its trigger was found, and what became of its events."""
        if await self._signed_in(request) is None:
            return _json({"error": "unauthorized"}, 401)
        sources = self._gateway.live.current.postbacks.sources
        source = request.query_params.get("source") or None
        if source is not None and source not in sources:
            return _json({"error": "invalid", "message": "not a configured source"}, 400)
        try:
            count = min(MAX_SHOWN, max(1, int(request.query_params.get("last", "50"))))
        except ValueError:
            return _json({"error": "invalid", "message": "last: a number"}, 400)
        shown = await last_postbacks(
            self._gateway.postback_log,
            sources,
            self._gateway.recent,
            source=source,
            count=count,
        )
        return _json(shown)

    # --- actions -------------------------------------------------------------------------

    async def replay(self, request: Request) -> Response:
        """What `tiktok-gateway replay --pixel … --code …` does, then delivery is woken."""
        refused = await self._action_refused(request)
        if refused is not None:
            return refused
        asked = _object(await request.body())
        pixel = asked.get("pixel") or None
        code = asked.get("code")
        if (pixel is not None and pixel not in self._pixels) or not (
            code is None or isinstance(code, int)
        ):
            return _json({"error": "invalid", "message": "pixel or code"}, 400)
        replayed = await self._gateway.outbox.replay(pixel=pixel, code=code)
        self._gateway.delivery.notify()
        return _json({"replayed": replayed})

    async def send_test(self, request: Request) -> Response:
        """What `tiktok-gateway send-test` does: one event sent now, its score shown."""
        refused = await self._action_refused(request)
        if refused is not None:
            return refused
        asked = _object(await request.body())
        fields = {k: str(asked[k]).strip() for k in _TEST_FIELDS if asked.get(k)}
        if "event" not in fields:
            return _json({"error": "invalid", "message": "an event name is needed"}, 400)
        pixel = asked.get("pixel") if asked.get("pixel") in self._pixels else None
        code = str(asked.get("test_event_code") or "").strip() or None
        test = TestEvent(**fields, pixel=pixel, test_event_code=code)
        try:
            result = await send_test(self._gateway.live.current, test)
        except (EventError, ConfigError) as exc:
            message = f"{exc.field}: {exc.message}" if isinstance(exc, EventError) else str(exc)
            return _json({"error": "invalid", "message": message}, 400)
        user = result.body["data"][0].get("user", {})
        shown = {**result.body, "data": [dict(e) for e in result.body["data"]]}
        for element in shown["data"]:
            if "user" in element:
                element["user"] = shown_user(element["user"])
        return _json(
            {
                "request": shown,
                "score": score(user),
                "answer": {
                    "code": result.outcome.code,
                    "message": result.outcome.message,
                    "request_id": result.outcome.request_id,
                },
                "explanation": result.explanation(),
                "warnings": result.warnings,
            }
        )


def _object(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body[:MAX_FORM]) if body else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def routes(gateway: Gateway) -> list[BaseRoute]:
    """The console's routes, or none at all while no admin password is configured."""
    if not gateway.settings.console.enabled:
        return []
    return Console(gateway).routes()
