"""The Events API client and the classification of its answers.

TikTok reports most errors as HTTP 200 with a non-zero envelope `code`, so the HTTP status
alone says little: every answer is classified here, once, into delivered / retry later /
permanent, by status AND code, following the table in `docs/tiktok-events-api.md`. Transport
failures from httpx are translated at this one boundary. The access token is sent in a
header and never appears in an `Outcome`, an exception or a log line.
"""

from __future__ import annotations

import email.utils
import enum
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx
import orjson

from gateway.core.event import Destination, Event, request_body, spliced_body
from gateway.core.secret import redact
from gateway.settings import Secret, Settings

TRACK_PATH = "/open_api/v1.3/event/track/"
DELIVERED_CODES = frozenset({0, 20001})
RETRY_CODES = frozenset({40100, 40700})
ALERT_CODES = frozenset({40001, 40105})
"""Codes that no retry can fix: the token or its scope is wrong; an operator must act."""


class OutcomeKind(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class Outcome:
    """What became of one request: delivered, worth retrying later, or never deliverable."""

    kind: OutcomeKind
    message: str
    code: int | None = None
    http_status: int | None = None
    request_id: str | None = None
    retry_after: float | None = None
    """The server's own delay hint in seconds (HTTP Retry-After), when it gave one."""
    alert: bool = False
    """True when an operator must fix something (token revoked, scope missing)."""

    @property
    def delivered(self) -> bool:
        return self.kind is OutcomeKind.DELIVERED


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit() and len(value) < 10:
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def classify(status: int, body: bytes, headers: Mapping[str, str]) -> Outcome:
    """Classify one HTTP answer from the Events API."""
    hint = _retry_after(headers)
    if status == 429 or status == 408 or status >= 500:
        return Outcome(OutcomeKind.RETRY, f"HTTP {status}", http_status=status, retry_after=hint)
    if status != 200:
        return Outcome(
            OutcomeKind.PERMANENT,
            f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}",
            http_status=status,
            alert=status in (401, 403),
        )
    try:
        envelope = orjson.loads(body)
        code = envelope["code"]
        if not isinstance(code, int):
            raise TypeError(code)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return Outcome(OutcomeKind.RETRY, "unreadable answer (no JSON envelope)", http_status=200)
    message = str(envelope.get("message", ""))
    request_id = envelope.get("request_id")
    request_id = str(request_id) if request_id is not None else None
    if code in DELIVERED_CODES:
        kind = OutcomeKind.DELIVERED
    elif code in RETRY_CODES or code >= 50000:
        kind = OutcomeKind.RETRY
    else:
        kind = OutcomeKind.PERMANENT
    return Outcome(
        kind,
        message,
        code=code,
        http_status=200,
        request_id=request_id,
        retry_after=hint,
        alert=code in ALERT_CODES,
    )


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    """The body as a stream that lets go of it once sent: an httpx response and its stream
    refer to each other, so the request (and a body passed as bytes, ~300 KB a batch)
    would live until the cyclic collector ran — tens of MB in a busy delivery process."""
    yield payload


class EventsApiClient:
    """One shared keep-alive HTTP client for every request to the Events API."""

    def __init__(
        self,
        api_base: str,
        *,
        timeout: float = 10.0,
        max_connections: int = 16,
        transport: httpx.AsyncBaseTransport | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        """`secrets` are scrubbed from every text TikTok sends back, besides the token used:
        an error message that echoes a token must not reach a dead letter, a log or a CLI."""
        self._url = api_base.rstrip("/") + TRACK_PATH
        self._secrets = tuple(secrets)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
            headers={"User-Agent": "tiktok-gateway"},
        )

    def learn_secrets(self, secrets: Iterable[str]) -> None:
        """Scrub these too from now on (a reload's new tokens; old ones stay scrubbed)."""
        self._secrets = tuple(dict.fromkeys([*self._secrets, *secrets]))

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> EventsApiClient:
        return cls(
            settings.api_base,
            timeout=settings.api_timeout_seconds,
            max_connections=settings.delivery.concurrency,
            transport=transport,
            secrets=settings.secrets(),
        )

    async def send(
        self, destination: Destination, events: Iterable[Event], token: Secret
    ) -> Outcome:
        """Post one batch (1–1000 events of one destination) and classify the answer."""
        return await self.send_body(request_body(destination, events), token)

    async def send_stored(
        self, destination: Destination, data: Sequence[str], token: Secret
    ) -> Outcome:
        """Post stored `data` elements of one destination, spliced in without parsing."""
        return await self._post(spliced_body(destination, data), token)

    async def send_body(self, body: Mapping[str, Any], token: Secret) -> Outcome:
        return await self._post(orjson.dumps(body), token)

    async def _post(self, payload: bytes, token: Secret) -> Outcome:
        headers = {
            "Access-Token": token.reveal(),
            "Content-Type": "application/json",
            "Content-Length": str(len(payload)),
        }
        try:
            response = await self._client.post(self._url, content=_once(payload), headers=headers)
        except httpx.TimeoutException as exc:
            return Outcome(OutcomeKind.RETRY, f"timeout ({type(exc).__name__})")
        except httpx.TransportError as exc:
            message = redact(f"connection error ({type(exc).__name__}: {exc})", self._secrets)
            return Outcome(OutcomeKind.RETRY, message)
        outcome = classify(response.status_code, response.content, response.headers)
        message = redact(outcome.message, (token.reveal(), *self._secrets))
        return outcome if message == outcome.message else replace(outcome, message=message)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> EventsApiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
