"""The settings sections beyond pixels: outbox, delivery, server API, browser, cookies.

Each section is a small frozen dataclass with safe defaults and a reader that validates its
TOML table, so `config.py` stays about the whole and each section about its own keys.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from gateway.core.secret import Secret, resolve_secret
from gateway.settings.reader import TableReader

_PATH = re.compile(r"^/[A-Za-z0-9._~/-]{0,63}$")
_BLOCKED_WORDS = ("tiktok", "pixel", "track", "collect", "analytics", "event")
DEFAULT_TAG_TESTING_HOSTS = ("gtm-msr.appspot.com", "tagassistant.google.com")


@dataclass(frozen=True)
class OutboxSettings:
    """Where acknowledged events wait: `sqlite:///path` (embedded) or `redis://…` (replicas)."""

    url: str = "sqlite:///tiktok-gateway-outbox.sqlite3"
    sqlite_synchronous: str = "FULL"
    lease_seconds: float = 300.0
    """A claimed event not settled within this time is claimed again (by any replica)."""


@dataclass(frozen=True)
class DeliverySettings:
    """How the dispatcher batches, paces and retries requests to the Events API."""

    batch_size: int = 1000
    linger_ms: int = 50
    concurrency: int = 4
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 5.0
    shutdown_grace_seconds: float = 10.0
    separate_process: bool = True
    """Deliver from a child process (see delivery_process.py); false: in the serving process."""


@dataclass(frozen=True)
class ServerApiSettings:
    """The server-to-server endpoint: who may post, and how much at once."""

    api_keys: tuple[Secret, ...] = ()
    max_body_bytes: int = 1_048_576
    max_events: int = 1000


@dataclass(frozen=True)
class BrowserSettings:
    """The browser path: where the snippet and beacon live, limits, and whom to believe."""

    snippet_path: str = "/gw.js"
    beacon_path: str = "/b"
    max_body_bytes: int = 16_384
    max_events: int = 10
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    client_ip_header: str | None = None
    """A header a trusted proxy sets to the client IP (e.g. CF-Connecting-IP)."""
    drop_bots: bool = True
    tag_testing_hosts: tuple[str, ...] = DEFAULT_TAG_TESTING_HOSTS
    generate_ttp: bool = False


@dataclass(frozen=True)
class CookieSettings:
    """First-party cookies the gateway sets, and the keys that sign its own."""

    domain: str | None = None
    secure: bool = True
    same_site: str = "Lax"
    ttclid_max_age_days: int = 30
    ttp_max_age_days: int = 395
    attribution_window_days: int = 28
    signed_name: str = "_ttgw"
    secrets: tuple[Secret, ...] = ()
    """Newest first: the first signs, all verify, so keys can be rotated."""


def redacted_outbox(outbox: OutboxSettings) -> dict[str, Any]:
    """The outbox settings with any password in the URL hidden."""
    url = re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", outbox.url)  # user:password@
    url = re.sub(r"\?.*$", "?***", url) if "?" in url else url  # ?password=… and friends
    return {**asdict(outbox), "url": url}


def read_outbox(table: TableReader, env: Mapping[str, str]) -> OutboxSettings:
    url = env.get("GATEWAY_OUTBOX_URL") or table.string("url") or OutboxSettings.url
    synchronous = (table.string("sqlite_synchronous", "FULL") or "FULL").upper()
    if synchronous not in ("FULL", "NORMAL", "EXTRA"):
        table.problem("sqlite_synchronous", "must be FULL, EXTRA or NORMAL")
    lease = table.number("lease_seconds", 300.0, 1.0, 86400.0)
    table.finish()
    if not url.startswith(("sqlite:", "redis://", "rediss://", "unix://")):
        table.problem("url", f"{url!r} is not sqlite:///path or redis://host:port/db")
    return OutboxSettings(url=url, sqlite_synchronous=synchronous, lease_seconds=lease)


def read_delivery(table: TableReader) -> DeliverySettings:
    defaults = DeliverySettings()
    settings = DeliverySettings(
        batch_size=table.integer("batch_size", defaults.batch_size, 1, 1000),
        linger_ms=table.integer("linger_ms", defaults.linger_ms, 0, 60_000),
        concurrency=table.integer("concurrency", defaults.concurrency, 1, 64),
        backoff_initial_seconds=table.number("backoff_initial_seconds", 1.0, 0.01, 3600.0),
        backoff_max_seconds=table.number("backoff_max_seconds", 300.0, 0.01, 86400.0),
        breaker_failures=table.integer("breaker_failures", defaults.breaker_failures, 1, 1000),
        breaker_cooldown_seconds=table.number("breaker_cooldown_seconds", 5.0, 0.01, 3600.0),
        shutdown_grace_seconds=table.number("shutdown_grace_seconds", 10.0, 0.0, 600.0),
        separate_process=table.boolean("separate_process", defaults.separate_process),
    )
    table.finish()
    return settings


def read_server_api(
    table: TableReader, env: Mapping[str, str], problems: list[str]
) -> ServerApiSettings:
    keys = [
        resolve_secret(ref, table.name("api_keys"), env, problems)
        for ref in table.strings("api_keys")
    ]
    if env.get("GATEWAY_API_KEY", "").strip():
        keys.append(Secret(env["GATEWAY_API_KEY"].strip(), source="GATEWAY_API_KEY"))
    for key in keys:
        if key.reveal() and len(key.reveal()) < 16:
            table.problem("api_keys", f"the key from {key.source} is shorter than 16 characters")
    settings = ServerApiSettings(
        api_keys=tuple(k for k in keys if k.reveal()),
        max_body_bytes=table.integer("max_body_bytes", 1_048_576, 1024, 64 * 1_048_576),
        max_events=table.integer("max_events", 1000, 1, 10_000),
    )
    table.finish()
    return settings


def _path(table: TableReader, key: str, default: str) -> str:
    path = table.string(key, default) or default
    if not _PATH.match(path):
        table.problem(key, f"{path!r} is not a path like /gw.js")
    elif any(word in path.lower() for word in _BLOCKED_WORDS):
        table.problem(
            key, f"{path!r} contains a word ad blockers match ({', '.join(_BLOCKED_WORDS)})"
        )
    return path


def read_browser(table: TableReader) -> BrowserSettings:
    defaults = BrowserSettings()
    snippet = _path(table, "snippet_path", defaults.snippet_path)
    beacon = _path(table, "beacon_path", defaults.beacon_path)
    if snippet == beacon:
        table.problem("beacon_path", "must differ from snippet_path")
    proxies = []
    for cidr in table.strings("trusted_proxies"):
        try:
            proxies.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            table.problem("trusted_proxies", f"{cidr!r} is not an IP address or CIDR range")
    header = table.string("client_ip_header")
    hosts = table.strings("tag_testing_hosts") if "tag_testing_hosts" in table.raw_keys() else None
    settings = BrowserSettings(
        snippet_path=snippet,
        beacon_path=beacon,
        max_body_bytes=table.integer("max_body_bytes", defaults.max_body_bytes, 512, 1_048_576),
        max_events=table.integer("max_events", defaults.max_events, 1, 100),
        trusted_proxies=tuple(proxies),
        client_ip_header=header.strip().lower() if header else None,
        drop_bots=table.boolean("drop_bots", True),
        tag_testing_hosts=tuple(h.lower() for h in hosts)
        if hosts is not None
        else DEFAULT_TAG_TESTING_HOSTS,
        generate_ttp=table.boolean("generate_ttp", False),
    )
    table.finish()
    return settings


def read_cookies(table: TableReader, env: Mapping[str, str], problems: list[str]) -> CookieSettings:
    defaults = CookieSettings()
    domain = table.string("domain")
    same_site = (table.string("same_site", "Lax") or "Lax").capitalize()
    if same_site not in ("Lax", "Strict", "None"):
        table.problem("same_site", "must be Lax, Strict or None")
    secure = table.boolean("secure", True)
    if same_site == "None" and not secure:
        table.problem("same_site", "None requires secure = true (browsers drop the cookie)")
    secrets = [
        resolve_secret(ref, table.name("secrets"), env, problems)
        for ref in table.strings("secrets")
    ]
    if env.get("GATEWAY_COOKIE_SECRET", "").strip():
        secrets.insert(
            0, Secret(env["GATEWAY_COOKIE_SECRET"].strip(), source="GATEWAY_COOKIE_SECRET")
        )
    for secret in secrets:
        if secret.reveal() and len(secret.reveal()) < 16:
            table.problem(
                "secrets", f"the secret from {secret.source} is shorter than 16 characters"
            )
    settings = CookieSettings(
        domain=domain.strip().lstrip(".").lower() if domain else None,
        secure=secure,
        same_site=same_site,
        ttclid_max_age_days=table.integer(
            "ttclid_max_age_days", defaults.ttclid_max_age_days, 1, 400
        ),
        ttp_max_age_days=table.integer("ttp_max_age_days", defaults.ttp_max_age_days, 1, 400),
        attribution_window_days=table.integer(
            "attribution_window_days", defaults.attribution_window_days, 1, 28
        ),
        signed_name=table.string("signed_name", defaults.signed_name) or defaults.signed_name,
        secrets=tuple(s for s in secrets if s.reveal()),
    )
    table.finish()
    return settings


__all__ = [
    "BrowserSettings",
    "CookieSettings",
    "DeliverySettings",
    "OutboxSettings",
    "ServerApiSettings",
    "read_browser",
    "read_cookies",
    "read_delivery",
    "read_outbox",
    "read_server_api",
    "redacted_outbox",
]
