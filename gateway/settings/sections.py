"""The settings sections beyond pixels: server, metrics, outbox, delivery, server API, rate
limits, relay, network, browser, cookies, console, privacy.

Each section is a frozen dataclass whose fields declare their default, bounds, environment
variable and conversion once (`setting`); `declared.read_section` reads any of them. A
section's `problems()` holds the rules that involve more than one field.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.core.secret import Secret
from gateway.settings.declared import choice, setting

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_PATH = re.compile(r"/[A-Za-z0-9._~/-]{0,63}")
_BLOCKED_WORDS = ("tiktok", "pixel", "track", "collect", "analytics", "event")
DEFAULT_TAG_TESTING_HOSTS = ("gtm-msr.appspot.com", "tagassistant.google.com")
Problems = Iterator[tuple[str, str]]
MAX_IMPORT_AGE_DAYS = 28
"""TikTok's click-through attribution window: older conversions are never attributed, so
no import may take them."""
DROPPED_QUERY_PARAMETERS = (
    *("email", "email_address", "mail"),
    *("phone", "phone_number", "tel", "telephone", "mobile", "cell", "fax"),
    *("name", "first_name", "last_name", "full_name", "given_name", "family_name", "surname"),
    *("fname", "lname", "username"),
    *("address", "address1", "address2", "street", "zip", "zip_code", "postcode", "postal_code"),
    *("birthday", "birthdate", "date_of_birth", "dob", "ssn", "password", "passwd", "pwd"),
)
"""Query parameters dropped from page URLs by default: their name says they hold personal
data, whatever their value looks like (`?name=John+Smith`). Compared without case, `_`,
`-`, also inside brackets or after a dot: `firstName`, `billing[email]`, `customer.phone`."""


def _outbox_url(url: str) -> str:
    if not url.startswith(("sqlite:", "redis://", "rediss://", "unix://")):
        raise ValueError(f"{url!r} is not sqlite:///path or redis://host:port/db")
    return url


def _path(path: str) -> str:
    if not _PATH.fullmatch(path):
        raise ValueError(f"{path!r} is not a path like /gw.js")
    if any(word in path.lower() for word in _BLOCKED_WORDS):
        words = ", ".join(_BLOCKED_WORDS)
        raise ValueError(f"{path!r} contains a word ad blockers match ({words})")
    return path


def _parameter(name: str) -> str:
    if not name.strip():
        raise ValueError("a query parameter name may not be blank")
    return name.strip()


def _header(name: str) -> str | None:
    return name.strip().lower() or None


def _network(cidr: str) -> Network:
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{cidr!r} is not an IP address or CIDR range") from None


@dataclass(frozen=True)
class ServerSettings:
    """Where `serve` listens (the command line may override both), and how long and how
    much it waits for a client (see http/protocol.py)."""

    host: str = setting("127.0.0.1")
    port: int = setting(8080, low=1, high=65535)
    header_timeout_seconds: float = setting(5.0, low=0.05, high=300.0)
    body_timeout_seconds: float = setting(10.0, low=0.05, high=300.0)
    """A body that stops for this long is closed; so is one slower than `min_body_rate`."""
    min_body_rate: int = setting(1024, low=1, high=1_000_000_000)
    """Bytes a second a body must average: each piece buys only its share of time."""
    keep_alive_seconds: float = setting(5.0, low=0.5, high=300.0)
    max_header_bytes: int = setting(16_384, low=1024, high=1_048_576)
    """Also the bound on a chunked body's trailers and chunk framing."""
    max_connections: int = setting(2048, low=1, high=100_000)
    """Lowered to fit the open-files limit (`ulimit -n`) when that is lower."""
    max_connections_per_client: int = setting(128, low=1, high=100_000)
    """One address's share; when all are taken, the address with the most gives one up."""


@dataclass(frozen=True)
class MetricsSettings:
    """Where Prometheus scrapes `/metrics`: a listener of its own, on loopback by default,
    never the public port unless a bearer token is configured (web/listeners.py)."""

    host: str = setting("127.0.0.1", env="GATEWAY_METRICS_HOST")
    port: int = setting(9464, low=0, high=65535)
    """0: no metrics listener."""
    bearer_tokens: tuple[Secret, ...] = setting((), env="GATEWAY_METRICS_TOKEN", min_length=16)
    """Set: `/metrics` is also served on the public port, to `Authorization: Bearer …`."""


@dataclass(frozen=True)
class OutboxSettings:
    """Where acknowledged events wait: `sqlite:///path` (embedded) or `redis://…` (replicas)."""

    url: str = setting(
        "sqlite:///tiktok-gateway-outbox.sqlite3",
        env="GATEWAY_OUTBOX_URL",
        convert=_outbox_url,
        secret_url=True,
    )
    sqlite_synchronous: str = setting("FULL", convert=choice("FULL", "EXTRA", "NORMAL"))
    lease_seconds: float = setting(300.0, low=1.0, high=86400.0)
    """A claimed event not settled within this time is claimed again (by any replica)."""
    max_backlog_mb: int = setting(4096, low=0, high=10_000_000)
    """Past this size, browser events are refused (503) until delivery catches up; 0: off."""
    max_backlog_age_hours: float = setting(48.0, low=0.0, high=24.0 * 28)
    """…or while the oldest undelivered event is older than this; 0: off."""
    min_free_mb: int = setting(512, low=0, high=10_000_000)
    """…or while less room than this is left (disk, or Redis maxmemory); 0: off."""


@dataclass(frozen=True)
class DeliverySettings:
    """How the dispatcher batches, paces and retries requests to the Events API."""

    batch_size: int = setting(1000, low=1, high=1000)
    linger_ms: int = setting(50, low=0, high=60_000)
    concurrency: int = setting(4, low=1, high=64)
    backoff_initial_seconds: float = setting(1.0, low=0.01, high=3600.0)
    backoff_max_seconds: float = setting(300.0, low=0.01, high=86400.0)
    breaker_failures: int = setting(5, low=1, high=1000)
    breaker_cooldown_seconds: float = setting(5.0, low=0.01, high=3600.0)
    shutdown_grace_seconds: float = setting(10.0, low=0.0, high=600.0)
    separate_process: bool = setting(True)
    """Deliver from a child process (see delivery/process.py); false: in the serving process."""


@dataclass(frozen=True)
class ServerApiSettings:
    """The server-to-server endpoint: who may post, and how much at once."""

    api_keys: tuple[Secret, ...] = setting((), env="GATEWAY_API_KEY", min_length=16)
    max_body_bytes: int = setting(1_048_576, low=1024, high=64 * 1_048_576)
    max_events: int = setting(1000, low=1, high=10_000)


@dataclass(frozen=True)
class ImportSettings:
    """File imports (`tiktok-gateway import`, `POST /v1/imports`): offline and CRM
    conversions, judged by the offline connectors' rules rather than the browser's."""

    max_event_age_days: int = setting(MAX_IMPORT_AGE_DAYS, low=1, high=MAX_IMPORT_AGE_DAYS)
    """Rows older than this are rejected and reported (TikTok's click-through window)."""
    default_currency: str | None = setting("USD", convert=lambda c: c.strip().upper() or None)
    """For rows with a value or price but no currency (the connectors' default)."""
    chunk_rows: int = setting(1000, low=1, high=100_000)
    """Rows stored per transaction; an interrupted import resumes after the last one."""
    max_upload_mb: int = setting(64, low=1, high=4096)
    """Largest file `POST /v1/imports` accepts (it is held in memory, never on disk)."""


@dataclass(frozen=True)
class RateLimitSettings:
    """Requests per client IP and endpoint (web/rate_limit.py); a rate of 0 is no limit.

    The beacon's default is far above what one visitor sends, so that many people behind
    one NAT address are still served; the server API's is off (backends send in bursts),
    but failed authentications there are limited (`failed_auth_per_minute`)."""

    beacon_per_second: float = setting(20.0, low=0.0, high=1_000_000.0)
    beacon_burst: int = setting(200, low=1, high=1_000_000)
    server_api_per_second: float = setting(0.0, low=0.0, high=1_000_000.0)
    server_api_burst: int = setting(1000, low=1, high=1_000_000)
    postback_per_second: float = setting(50.0, low=0.0, high=1_000_000.0)
    """Postbacks per lead-system address: platforms fire them in bursts, from few hosts."""
    postback_burst: int = setting(1000, low=1, high=1_000_000)
    failed_auth_per_minute: float = setting(10.0, low=0.0, high=1_000_000.0)
    """Failed authentications per client on the server API, relay, imports and postbacks
    (web/failed_auth.py): on by default, since their request limits let guesses through."""
    failed_auth_burst: int = setting(20, low=1, high=1_000_000)
    ipv6_prefix: int = setting(64, low=32, high=128)
    """An IPv6 client counts as its /64: one host usually holds the whole prefix."""
    max_clients: int = setting(100_000, low=100, high=10_000_000)
    """Clients remembered per process and endpoint (memory stays bounded in a flood)."""


@dataclass(frozen=True)
class RelaySettings:
    """The TikTok-compatible relay: TikTok's own paths, for integrations that change only
    their base URL. Larger than TikTok's limits on purpose: a request over 1,000 events is
    split downstream instead of refused."""

    enabled: bool = setting(True)
    max_body_bytes: int = setting(8 * 1_048_576, low=1024, high=64 * 1_048_576)
    max_events: int = setting(10_000, low=1, high=100_000)


@dataclass(frozen=True)
class NetworkSettings:
    """Whom to believe about a client's address, on every endpoint (http/client_ip.py)."""

    trusted_proxies: tuple[Network, ...] = setting((), each=_network)
    """Peers whose X-Forwarded-For / Forwarded (or `client_ip_header`) are believed."""
    client_ip_header: str | None = setting(None, convert=_header)
    """A header a trusted proxy sets to the client IP (e.g. CF-Connecting-IP)."""


@dataclass(frozen=True)
class BrowserSettings:
    """The browser path: where the snippet and beacon live, limits, and whom to believe."""

    snippet_path: str = setting("/gw.js", convert=_path)
    beacon_path: str = setting("/b", convert=_path)
    max_body_bytes: int = setting(16_384, low=512, high=1_048_576)
    max_events: int = setting(10, low=1, high=100)
    drop_bots: bool = setting(True)
    tag_testing_hosts: tuple[str, ...] = setting(DEFAULT_TAG_TESTING_HOSTS, each=str.lower)
    generate_ttp: bool = setting(False)
    trusted_proxies: tuple[Network, ...] | None = setting(None, each=_network, moved_to="network")
    """Deprecated: `[network] trusted_proxies` (None: not written here)."""
    client_ip_header: str | None = setting(None, convert=_header, moved_to="network")
    """Deprecated: `[network] client_ip_header` (None: not written here)."""

    def problems(self) -> Problems:
        if self.snippet_path == self.beacon_path:
            yield "beacon_path", "must differ from snippet_path"


@dataclass(frozen=True)
class CookieSettings:
    """First-party cookies the gateway sets, and the keys that sign its own."""

    domain: str | None = setting(None, convert=lambda d: d.strip().lstrip(".").lower() or None)
    secure: bool = setting(True)
    same_site: str = setting(
        "Lax", convert=choice("Lax", "Strict", "None", normalise=str.capitalize)
    )
    ttclid_max_age_days: int = setting(30, low=1, high=400)
    ttp_max_age_days: int = setting(395, low=1, high=400)
    attribution_window_days: int = setting(28, low=1, high=28)
    signed_name: str = setting("_ttgw")
    secrets: tuple[Secret, ...] = setting(
        (), env="GATEWAY_COOKIE_SECRET", env_first=True, min_length=16
    )
    """Newest first: the first signs, all verify, so keys can be rotated."""

    def problems(self) -> Problems:
        if self.same_site == "None" and not self.secure:
            yield "same_site", "None requires secure = true (browsers drop the cookie)"


@dataclass(frozen=True)
class ConsoleSettings:
    """The live console (web/console/): off until an admin password is configured, since
    it shows every event and can replay dead letters."""

    path: str = setting("/console", convert=_path)
    admin_password: Secret = setting(Secret("", source="missing"))
    """`env:NAME` or `file:/path` (or, for a demo, the password itself); 12 characters or more."""
    session_hours: float = setting(12.0, low=0.05, high=24.0 * 30)
    login_attempts_per_minute: float = setting(5.0, low=0.1, high=600.0)
    """Logins per client IP; a burst of this many, then one per 60/N seconds."""
    login_failures_per_minute_all: float = setting(30.0, low=0.0, high=6000.0)
    """Failed logins from every address together (shared by replicas with Redis): a burst of
    this many, then one per 60/N seconds; past it a login is refused (429) before its password
    is compared, except from a browser that logged in here before (a signed device cookie),
    whose failures count per browser instead; 0: no such budget."""

    @property
    def enabled(self) -> bool:
        return bool(self.admin_password.reveal())

    def problems(self) -> Problems:
        if self.enabled and len(self.admin_password.reveal()) < 12:
            yield "admin_password", "is shorter than 12 characters"


@dataclass(frozen=True)
class PrivacySettings:
    """Personal data kept out of page URLs and free-text fields (see core/redact.py)."""

    drop_query_parameters: tuple[str, ...] = setting((), each=_parameter)
    """Dropped from page URLs besides DROPPED_QUERY_PARAMETERS (e.g. "customer")."""
    keep_query_parameters: tuple[str, ...] = setting((), each=_parameter)
    """Names of DROPPED_QUERY_PARAMETERS to keep (e.g. "name" where it is a product slug)."""

    def dropped_query_parameters(self) -> tuple[str, ...]:
        kept = {name.lower() for name in self.keep_query_parameters}
        names = (*DROPPED_QUERY_PARAMETERS, *self.drop_query_parameters)
        return tuple(name for name in names if name.lower() not in kept)


__all__ = [
    "DROPPED_QUERY_PARAMETERS",
    "BrowserSettings",
    "ConsoleSettings",
    "CookieSettings",
    "DeliverySettings",
    "ImportSettings",
    "MetricsSettings",
    "NetworkSettings",
    "OutboxSettings",
    "PrivacySettings",
    "RateLimitSettings",
    "RelaySettings",
    "ServerApiSettings",
    "ServerSettings",
]
