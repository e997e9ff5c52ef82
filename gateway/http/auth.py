"""Who may call: every key, token and secret compared in one place, in constant time.

`Credentials` holds one configuration's keys, tokens and secrets, encoded once; a reload
builds a new one (only pixel tokens and postback secrets change then: settings/live.py).
Each comparison runs against every candidate, so timing tells neither which one matched
nor how much of it. A `Gate` guards one endpoint: a client locked out by its failed
authentications or over its rate limit is refused before its credential is even compared
(no free guesses), and each wrong credential is counted against the failed-auth budget.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NoReturn

from starlette.requests import Request

from gateway.core.errors import Unauthorized
from gateway.core.secret import Secret
from gateway.http.client_ip import ClientIpResolver
from gateway.http.failed_auth import FailedAuthLimit
from gateway.http.rate_limit import RateLimit
from gateway.settings import Settings
from gateway.settings.live import LiveSettings


def matches(given: str | bytes, candidates: Iterable[bytes]) -> bool:
    """`given` (not empty) equals one of `candidates`, compared in constant time."""
    if not given:
        return False
    given = given.encode() if isinstance(given, str) else given  # bytes: non-ASCII is no error
    # against every candidate, always, so timing does not tell which prefix matched
    return any([hmac.compare_digest(given, candidate) for candidate in candidates])


def presented_key(request: Request) -> str:
    """The bearer token, else the X-Api-Key header ("" when the request has neither)."""
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    return given or request.headers.get("x-api-key", "").strip()


@dataclass(frozen=True)
class Credentials:
    """Every credential of one configuration, encoded once, and how each is checked."""

    api_keys: tuple[bytes, ...]
    relay_tokens: tuple[bytes, ...]
    """What the relay takes as an `Access-Token`: any pixel's token or any API key."""
    relay_senders: Mapping[str, tuple[bytes, ...]]
    """Pixel id → what may relay for it: the API keys and that pixel's own token."""
    postback_secrets: Mapping[str, bytes]
    console_password: bytes
    metrics_tokens: tuple[bytes, ...]

    @classmethod
    def of(cls, settings: Settings) -> Credentials:
        keys = _encoded(settings.server_api.api_keys)
        tokens = {p.id: p.access_token.reveal().encode() for p in settings.pixels}
        secrets = settings.postbacks.sources.items()
        return cls(
            api_keys=keys,
            relay_tokens=tuple(t for t in dict.fromkeys([*tokens.values(), *keys]) if t),
            relay_senders={pixel: (*keys, token) for pixel, token in tokens.items()},
            postback_secrets={name: s.secret.reveal().encode() for name, s in secrets},
            console_password=settings.console.admin_password.reveal().encode(),
            metrics_tokens=_encoded(settings.metrics.bearer_tokens),
        )

    def api_key(self, request: Request) -> bool:
        """A bearer token or X-Api-Key equal to one of the API keys."""
        return matches(presented_key(request), self.api_keys)

    def relay_token(self, token: bytes) -> bool:
        return matches(token, self.relay_tokens)

    def may_relay(self, token: bytes, pixel_id: str) -> bool:
        return matches(token, self.relay_senders.get(pixel_id, ()))

    def postback(self, source: str, key: str | None, request: Request) -> bool:
        """The source's secret in the URL (`key`); without one, the secret or an API key in
        a header (a sender that can set headers)."""
        secret = self.postback_secrets.get(source)
        if secret is None:
            return False
        if key is not None:
            return matches(key, (secret,))
        return matches(presented_key(request), (secret, *self.api_keys))

    def console(self, password: str) -> bool:
        return matches(password, (self.console_password,))

    def metrics(self, request: Request) -> bool:
        """`Authorization: Bearer` with one of the metrics tokens."""
        header = request.headers.get("authorization", "")
        if header[:7].lower() != "bearer ":
            return False
        return matches(header[7:].strip(), self.metrics_tokens)


def _encoded(secrets: Iterable[Secret]) -> tuple[bytes, ...]:
    return tuple(s.reveal().encode() for s in secrets)


class Auth:
    """The credentials of the configuration now — swapped whole by a reload, so a request
    that takes `current` once is judged by one configuration — and the failed-auth budget
    that counts wrong ones."""

    def __init__(self, live: LiveSettings, failed: FailedAuthLimit) -> None:
        self.current = Credentials.of(live.current)
        self.failed = failed
        network = live.current.network
        self._ips = ClientIpResolver(network.trusted_proxies, network.client_ip_header)
        live.on_reload(self._reload)

    def _reload(self, settings: Settings) -> None:
        self.current = Credentials.of(settings)

    def gate(self, endpoint: str, limit: RateLimit) -> Gate:
        """The door of one endpoint: `limit` counts its requests, failures count as
        `endpoint`."""
        return Gate(self, limit, endpoint)

    def client(self, request: Request) -> str | None:
        peer = request.client.host if request.client else None
        return self._ips.resolve(peer, request.headers)


class Gate:
    """Who may call one endpoint that takes a credential: a client neither locked out by
    its failed authentications nor over its rate limit (both checked first) that sends a
    right one."""

    def __init__(self, auth: Auth, limit: RateLimit, endpoint: str) -> None:
        self._auth = auth
        self._limit = limit
        self._endpoint = endpoint

    async def admit(self, request: Request) -> None:
        """The server API's door (`/v1/events`, `/v1/imports`): one of the API keys;
        raises TooManyRequests or Unauthorized."""
        await self.check(request)
        credentials = self._auth.current
        if not credentials.api_keys:
            raise Unauthorized("the server API is off: configure an API key")
        if not credentials.api_key(request):
            await self.refuse(request, "missing or wrong API key")

    async def check(self, request: Request) -> None:
        """The lockout and the rate limit alone, before the endpoint compares its own
        credential; a client is not even looked up while nobody has failed."""
        failed = self._auth.failed
        watching = failed.watching
        if watching or self._limit.enabled:
            ip = self._auth.client(request)
            if watching:
                await failed.check(ip)
            if self._limit.enabled:
                await self._limit.admit(ip)

    async def refuse(self, request: Request, message: str) -> NoReturn:
        """Count a missing or wrong credential, then raise Unauthorized(`message`) (or
        TooManyRequests when it was one too many)."""
        await self._auth.failed.failed(self._auth.client(request), self._endpoint)
        raise Unauthorized(message)
