"""The whole configuration: pixels (destinations with their tokens) and every section.

`Settings` mirrors the TOML file key for key, so `redacted()` prints what a user would write
and the generic reader (`declared.read_section`) reads it without a hand-written parser.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers

from gateway.core.errors import EventError
from gateway.core.secret import Secret
from gateway.settings.declared import (
    choice,
    deprecation_warnings,
    read_section,
    redacted,
    secret_files,
    secret_values,
    setting,
)
from gateway.settings.descriptors import connection_bound
from gateway.settings.postbacks import PostbackSettings
from gateway.settings.reader import TableReader
from gateway.settings.sections import (
    BrowserSettings,
    ConsoleSettings,
    CookieSettings,
    DeliverySettings,
    ImportSettings,
    MetricsSettings,
    NetworkSettings,
    OutboxSettings,
    PrivacySettings,
    Problems,
    RateLimitSettings,
    RelaySettings,
    ServerApiSettings,
    ServerSettings,
)

DEFAULT_API_BASE = "https://business-api.tiktok.com"
EVENT_SOURCES = ("web", "app", "offline", "crm")
MAX_EVENT_AGE_DAYS = 7
"""TikTok accepts events up to 7 days old (28 for offline event sets)."""
PIXEL_ID = re.compile(r"[A-Za-z0-9_-]{4,64}")
_ORIGIN = re.compile(r"https?://[a-z0-9.-]+(:\d{1,5})?")


def _pixel_id(pixel_id: str) -> str:
    if not PIXEL_ID.fullmatch(pixel_id):
        raise ValueError(f"{pixel_id!r} is not a pixel code (letters, digits, '_' or '-')")
    return pixel_id


def site_origin(origin: str) -> str:
    """An origin as the browser sends it (lowercase, no path), or ValueError."""
    normal = origin.strip().lower().rstrip("/")
    if not _ORIGIN.fullmatch(normal):
        raise ValueError(f"{origin!r} is not an origin like https://shop.example")
    return normal


@dataclass(frozen=True)
class PixelConfig:
    """One destination: a pixel (web) or an event set (app / offline / crm) with its token."""

    id: str = setting("", convert=_pixel_id)
    access_token: Secret = setting(Secret("", source="missing"))
    event_source: str = setting("web", convert=choice(*EVENT_SOURCES, normalise=str.lower))
    test_event_code: str | None = setting(None, convert=lambda code: code.strip() or None)
    limited_data_use: bool = setting(False)
    origins: tuple[str, ...] = setting((), each=site_origin)
    require_consent: bool = setting(False)
    """Browser events are forwarded only when the visitor granted consent."""

    def problems(self) -> Problems:
        if not self.id:
            yield "id", "missing (the pixel code or event set id from TikTok Events Manager)"
        if self.access_token.source == "missing":
            yield "access_token", "missing (write the token, env:NAME or file:/path)"


def _read_pixels(
    table: TableReader, key: str, env: Mapping[str, str], problems: list[str]
) -> tuple[PixelConfig, ...]:
    """Each [[pixels]] table; one with any problem is left out (the problems say why)."""
    pixels = []
    for pixel_table in table.tables(key):
        before = len(problems)
        pixel = read_section(PixelConfig, pixel_table, env, problems)
        if len(problems) == before:
            pixels.append(pixel)
    return tuple(pixels)


def _read_event_names(
    table: TableReader, key: str, env: Mapping[str, str], problems: list[str]
) -> dict[str, tuple[str, ...]]:
    names_table = table.table(key)
    names: dict[str, tuple[str, ...]] = {}
    for name, value in names_table.raw().items():
        targets = [value] if isinstance(value, str) else value
        if (
            not isinstance(targets, list)
            or not targets
            or not all(isinstance(t, str) and t.strip() for t in targets)
        ):
            names_table.problem(name, "must be a TikTok event name or a non-empty list of them")
            continue
        names[name] = tuple(t.strip() for t in targets)
    return names


def _api_base(url: str) -> str:
    url = url.rstrip("/")
    if not re.match(r"^https?://[^\s/]+", url):
        raise ValueError(f"{url!r} is not an http(s) URL")
    return url


def _watch_seconds(seconds: float) -> float:
    if 0 < seconds < 0.1:
        raise ValueError("must be 0 (off) or at least 0.1")
    return seconds


def _region(region: str) -> str:
    region = region.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{region!r} is not a region code such as US or DE")
    return region


def pick_pixel(
    pixels: Mapping[str, PixelConfig],
    pixel_id: object,
    field: str = "pixel_id",
    *,
    first: bool = False,
    unknown: str = "is not a configured pixel",
) -> PixelConfig:
    """The pixel an input names in `pixels` (by id), or when it names none the only one
    (`first`: the first one). The one lookup every source and command shares; EventError
    naming `field` (with `unknown` as the reason for an id that is not there)."""
    if pixel_id is None:
        if len(pixels) == 1 or (first and pixels):
            return next(iter(pixels.values()))
        raise EventError(field, "required: several pixels are configured")
    pixel = pixels.get(pixel_id) if isinstance(pixel_id, str) else None
    if pixel is None:
        raise EventError(field, unknown)
    return pixel


@dataclass(frozen=True)
class Settings:
    """The gateway's whole configuration, immutable: a reload builds a new one (live.py)."""

    pixels: tuple[PixelConfig, ...] = setting((), read=_read_pixels)
    api_base: str = setting(DEFAULT_API_BASE, env="TIKTOK_API_BASE", convert=_api_base)
    api_timeout_seconds: float = setting(10.0, low=0.1, high=120.0)
    server: ServerSettings = setting(default_factory=ServerSettings)
    metrics: MetricsSettings = setting(default_factory=MetricsSettings)
    default_phone_region: str = setting("US", convert=_region)
    max_event_age_days: int = setting(MAX_EVENT_AGE_DAYS, low=1, high=28)
    max_clock_skew_seconds: int = setting(300, low=0, high=86400)
    strict_event_names: bool = setting(False)
    event_names: Mapping[str, tuple[str, ...]] = setting(
        default_factory=dict, read=_read_event_names
    )
    log_level: str = setting(
        "info", convert=choice("debug", "info", "warning", "error", normalise=str.lower)
    )
    log_format: str = setting(
        "auto",
        env="GATEWAY_LOG_FORMAT",
        convert=choice("auto", "text", "json", normalise=str.lower),
    )
    """text, json (one object per line), or auto: text on a terminal, json elsewhere."""
    watch_files_seconds: float = setting(5.0, low=0.0, high=3600.0, convert=_watch_seconds)
    """How often `serve` looks whether the config file or a `file:` secret changed, and
    reloads when one did (0: only on SIGHUP). Content is compared, not modification times:
    Kubernetes swaps a mounted Secret by moving a symlink."""
    outbox: OutboxSettings = setting(default_factory=OutboxSettings)
    delivery: DeliverySettings = setting(default_factory=DeliverySettings)
    server_api: ServerApiSettings = setting(default_factory=ServerApiSettings)
    imports: ImportSettings = setting(default_factory=ImportSettings)
    rate_limit: RateLimitSettings = setting(default_factory=RateLimitSettings)
    relay: RelaySettings = setting(default_factory=RelaySettings)
    network: NetworkSettings = setting(default_factory=NetworkSettings)
    browser: BrowserSettings = setting(default_factory=BrowserSettings)
    cookies: CookieSettings = setting(default_factory=CookieSettings)
    console: ConsoleSettings = setting(default_factory=ConsoleSettings)
    privacy: PrivacySettings = setting(default_factory=PrivacySettings)
    postbacks: PostbackSettings = setting(default_factory=PostbackSettings)

    def problems(self) -> Problems:
        taken = (self.browser.snippet_path, self.browser.beacon_path, "/v1/events")
        path = self.console.path
        if self.console.enabled and any(p == path or p.startswith(path + "/") for p in taken):
            yield "console", f"path {path} would hide the snippet, the beacon or the server API"

    @functools.cached_property
    def pixels_by_id(self) -> Mapping[str, PixelConfig]:
        return {pixel.id: pixel for pixel in self.pixels}

    def pixel(self, pixel_id: object, field: str = "pixel_id") -> PixelConfig:
        """The configured pixel `pixel_id` names (`pick_pixel`)."""
        return pick_pixel(self.pixels_by_id, pixel_id, field)

    def warnings(self) -> list[str]:
        """Settings that work but are risky: `check-config` prints them, `serve` logs them."""
        found = deprecation_warnings(self)
        for network in self.network.trusted_proxies:
            if network.prefixlen < (16 if network.version == 4 else 48) and network.is_global:
                found.append(
                    f"network.trusted_proxies: {network} trusts {network.num_addresses:,} "
                    "public addresses to tell the client's IP: list your proxies' own"
                )
        for pixel in self.pixels:
            if pixel.access_token.source == "inline":
                found.append(
                    f"pixel {pixel.id}: the access token is written in the file; "
                    "prefer env:NAME or file:/path"
                )
            insecure = [o for o in pixel.origins if o.startswith("http://")]
            if insecure and self.cookies.secure:
                found.append(
                    f"pixel {pixel.id}: {', '.join(insecure)} is plain http, but cookies are "
                    "secure: browsers will not keep them there"
                )
        _, lowered = connection_bound(self.server.max_connections)
        if lowered:
            found.append(lowered)
        return found

    def secrets(self) -> list[str]:
        """Every secret value, for the log filter that scrubs them as a last line of defence."""
        return list(dict.fromkeys(secret_values(self)))

    def secret_files(self) -> list[str]:
        """The path of every `file:` secret (a reload watches them)."""
        return list(dict.fromkeys(secret_files(self)))

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain data with every secret replaced by its source."""
        shown: dict[str, Any] = redacted(self)
        return shown
