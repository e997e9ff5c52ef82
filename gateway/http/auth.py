"""Who may call an endpoint that takes a credential: every key compared in one place.

Keys are compared in constant time against every configured key, always; a client locked
out by its failed authentications or over its rate limit is refused before its key is even
compared, so no guess is free.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from gateway.core.errors import Unauthorized
from gateway.http.client_ip import ClientIpResolver
from gateway.http.failed_auth import FailedAuthLimit
from gateway.http.rate_limit import RateLimit
from gateway.settings import Settings


def authorised(request: Request, keys: tuple[bytes, ...]) -> bool:
    """A bearer token or X-Api-Key equal to one of `keys`, compared in constant time."""
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    given = given or request.headers.get("x-api-key", "").strip()
    if not given:
        return False
    candidate = given.encode()
    # compare against every key, always, so timing does not tell which prefix matched
    return any([hmac.compare_digest(candidate, key) for key in keys])


class ServerCallers:
    """Who may call a server-to-server endpoint (`/v1/events`, `/v1/imports`, the relay): a
    client neither locked out by its failed authentications nor over its rate limit — both
    checked before the key is, so no free guesses — that sends one of the API keys."""

    def __init__(
        self, settings: Settings, limit: RateLimit, failed: FailedAuthLimit, endpoint: str
    ) -> None:
        """`failed`: the budget of failed authentications, counted here as `endpoint`."""
        self._limit = limit
        self._failed = failed
        self._endpoint = endpoint
        network = settings.network
        self._ips = ClientIpResolver(network.trusted_proxies, network.client_ip_header)
        self._keys = tuple(k.reveal().encode() for k in settings.server_api.api_keys)

    async def admit(self, request: Request) -> None:
        """Return when the caller may go on; raise TooManyRequests or Unauthorized."""
        await self.count(request)
        if not self._keys:
            raise Unauthorized("the server API is off: configure an API key")
        if not authorised(request, self._keys):
            await self.failed(request)
            raise Unauthorized("missing or wrong API key")

    async def count(self, request: Request) -> None:
        """The lockout and the rate limit alone (the relay checks TikTok's tokens itself);
        a client that never failed is not even looked up while nobody has failed."""
        watching = self._failed.watching
        if watching or self._limit.enabled:
            ip = self._ip(request)
            if watching:
                await self._failed.check(ip)
            if self._limit.enabled:
                await self._limit.admit(ip)

    async def failed(self, request: Request) -> None:
        """Count a missing or wrong credential (raises TooManyRequests when one too many)."""
        await self._failed.failed(self._ip(request), self._endpoint)

    def _ip(self, request: Request) -> str | None:
        peer = request.client.host if request.client else None
        return self._ips.resolve(peer, request.headers)
