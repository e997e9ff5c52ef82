"""Settings: one TOML file plus environment variables, validated once at start-up.

Everything is parsed at the edge into frozen, typed objects; the rest of the gateway never
sees raw TOML. Validation collects every problem before failing so `check-config` can print
them all at once, one line each, naming the field and why. Secrets are held in `Secret`,
whose repr never shows the value, and may be written as `env:NAME` or `file:/path` so the
file itself holds none.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import phonenumbers

from gateway.core.errors import ConfigError
from gateway.core.secret import Secret, resolve_secret
from gateway.settings.reader import TableReader
from gateway.settings.sections import (
    BrowserSettings,
    CookieSettings,
    DeliverySettings,
    OutboxSettings,
    ServerApiSettings,
    read_browser,
    read_cookies,
    read_delivery,
    read_outbox,
    read_server_api,
    redacted_outbox,
)

__all__ = [
    "BrowserSettings",
    "CookieSettings",
    "DeliverySettings",
    "OutboxSettings",
    "PixelConfig",
    "Secret",
    "ServerApiSettings",
    "Settings",
    "load_settings",
    "parse_settings",
]

DEFAULT_API_BASE = "https://business-api.tiktok.com"
EVENT_SOURCES = ("web", "app", "offline", "crm")
_PIXEL_ID = re.compile(r"^[A-Za-z0-9_-]{4,64}$")
_ORIGIN = re.compile(r"^https?://[a-z0-9.-]+(:\d{1,5})?$")
_LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class PixelConfig:
    """One destination: a pixel (web) or an event set (app / offline / crm) with its token."""

    id: str
    access_token: Secret
    event_source: str = "web"
    test_event_code: str | None = None
    limited_data_use: bool = False
    origins: tuple[str, ...] = ()
    require_consent: bool = False
    """Browser events are forwarded only when the visitor granted consent."""


@dataclass(frozen=True)
class Settings:
    """The gateway's whole configuration, immutable after start-up."""

    pixels: tuple[PixelConfig, ...]
    api_base: str = DEFAULT_API_BASE
    api_timeout_seconds: float = 10.0
    host: str = "127.0.0.1"
    port: int = 8080
    default_phone_region: str = "US"
    max_event_age_days: int = 7
    max_clock_skew_seconds: int = 300
    strict_event_names: bool = False
    event_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    log_level: str = "info"
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    server_api: ServerApiSettings = field(default_factory=ServerApiSettings)
    browser: BrowserSettings = field(default_factory=BrowserSettings)
    cookies: CookieSettings = field(default_factory=CookieSettings)

    def pixel(self, pixel_id: str) -> PixelConfig | None:
        for pixel in self.pixels:
            if pixel.id == pixel_id:
                return pixel
        return None

    def secrets(self) -> list[str]:
        """Every secret value, for the log filter that scrubs them as a last line of defence."""
        tokens = [p.access_token.reveal() for p in self.pixels]
        keys = [k.reveal() for k in (*self.server_api.api_keys, *self.cookies.secrets)]
        outbox_password = urlsplit(self.outbox.url).password if "@" in self.outbox.url else None
        return [value for value in (*tokens, *keys, outbox_password) if value]

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain data with every secret replaced by its source."""
        return {
            "api_base": self.api_base,
            "api_timeout_seconds": self.api_timeout_seconds,
            "server": {"host": self.host, "port": self.port},
            "default_phone_region": self.default_phone_region,
            "max_event_age_days": self.max_event_age_days,
            "max_clock_skew_seconds": self.max_clock_skew_seconds,
            "strict_event_names": self.strict_event_names,
            "log_level": self.log_level,
            "event_names": {k: list(v) for k, v in self.event_names.items()},
            "outbox": redacted_outbox(self.outbox),
            "delivery": asdict(self.delivery),
            "server_api": {
                "api_keys": [str(k) for k in self.server_api.api_keys],
                "max_body_bytes": self.server_api.max_body_bytes,
                "max_events": self.server_api.max_events,
            },
            "browser": {
                **asdict(self.browser),
                "trusted_proxies": [str(n) for n in self.browser.trusted_proxies],
            },
            "cookies": {
                **asdict(self.cookies),
                "secrets": [str(s) for s in self.cookies.secrets],
            },
            "pixels": [
                {
                    "id": p.id,
                    "access_token": str(p.access_token),
                    "event_source": p.event_source,
                    "test_event_code": p.test_event_code,
                    "limited_data_use": p.limited_data_use,
                    "origins": list(p.origins),
                    "require_consent": p.require_consent,
                }
                for p in self.pixels
            ],
        }


def _read_pixel(
    table: TableReader, env: Mapping[str, str], problems: list[str]
) -> PixelConfig | None:
    pixel_id = table.string("id")
    token_ref = table.string("access_token")
    event_source = table.string("event_source", "web") or "web"
    test_code = table.string("test_event_code")
    limited = table.boolean("limited_data_use", False)
    origins = table.strings("origins")
    require_consent = table.boolean("require_consent", False)
    table.finish()
    ok = True
    if not pixel_id:
        table.problem("id", "missing (the pixel code or event set id from TikTok Events Manager)")
        ok = False
    elif not _PIXEL_ID.match(pixel_id):
        table.problem("id", f"{pixel_id!r} is not a pixel code (letters, digits, '_' or '-')")
        ok = False
    if not token_ref:
        table.problem("access_token", "missing (write the token, env:NAME or file:/path)")
        token = Secret("")
        ok = False
    else:
        token = resolve_secret(token_ref, table.name("access_token"), env, problems)
    if event_source not in EVENT_SOURCES:
        table.problem("event_source", f"must be one of {', '.join(EVENT_SOURCES)}")
        ok = False
    clean_origins = []
    for origin in origins:
        normal = origin.strip().lower().rstrip("/")
        if not _ORIGIN.match(normal):
            table.problem("origins", f"{origin!r} is not an origin like https://shop.example")
            ok = False
        clean_origins.append(normal)
    if not ok or pixel_id is None:
        return None
    return PixelConfig(
        id=pixel_id,
        access_token=token,
        event_source=event_source,
        test_event_code=test_code or None,
        limited_data_use=limited,
        origins=tuple(clean_origins),
        require_consent=require_consent,
    )


def _read_event_names(table: TableReader) -> dict[str, tuple[str, ...]]:
    names: dict[str, tuple[str, ...]] = {}
    for key, value in table.raw().items():
        targets = [value] if isinstance(value, str) else value
        if (
            not isinstance(targets, list)
            or not targets
            or not all(isinstance(t, str) and t.strip() for t in targets)
        ):
            table.problem(key, "must be a TikTok event name or a non-empty list of them")
            continue
        names[key] = tuple(t.strip() for t in targets)
    return names


def _apply_env_pixel(
    pixels: list[PixelConfig], env: Mapping[str, str], problems: list[str]
) -> list[PixelConfig]:
    """The one-pixel quick start: TIKTOK_PIXEL_ID + TIKTOK_ACCESS_TOKEN add or override a pixel."""
    pixel_id = env.get("TIKTOK_PIXEL_ID", "").strip()
    token = env.get("TIKTOK_ACCESS_TOKEN", "").strip()
    test_code = env.get("TIKTOK_TEST_EVENT_CODE", "").strip() or None
    if not pixel_id:
        if token:
            problems.append("TIKTOK_PIXEL_ID: not set, but TIKTOK_ACCESS_TOKEN is")
        return pixels
    if not _PIXEL_ID.match(pixel_id):
        problems.append(f"TIKTOK_PIXEL_ID: {pixel_id!r} is not a pixel code")
        return pixels
    existing = next((p for p in pixels if p.id == pixel_id), None)
    if not token and existing is None:
        problems.append("TIKTOK_ACCESS_TOKEN: missing (the Events API access token)")
        return pixels
    secret = Secret(token, source="TIKTOK_ACCESS_TOKEN") if token else None
    if existing is not None:
        updated = PixelConfig(
            id=existing.id,
            access_token=secret or existing.access_token,
            event_source=existing.event_source,
            test_event_code=test_code or existing.test_event_code,
            limited_data_use=existing.limited_data_use,
            origins=existing.origins,
            require_consent=existing.require_consent,
        )
        return [updated if p is existing else p for p in pixels]
    assert secret is not None
    return [*pixels, PixelConfig(id=pixel_id, access_token=secret, test_event_code=test_code)]


def parse_settings(
    data: Mapping[str, Any], env: Mapping[str, str], *, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build `Settings` from parsed TOML and an environment, or raise `ConfigError`."""
    problems: list[str] = []
    root = TableReader(data, "", problems)
    api_base = env.get("TIKTOK_API_BASE") or root.string("api_base", DEFAULT_API_BASE)
    api_base = (api_base or DEFAULT_API_BASE).rstrip("/")
    if not re.match(r"^https?://[^\s/]+", api_base):
        problems.append(f"api_base: {api_base!r} is not an http(s) URL")
    timeout = root.number("api_timeout_seconds", 10.0, 0.1, 120.0)
    region = (root.string("default_phone_region", "US") or "US").upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        root.problem("default_phone_region", f"{region!r} is not a region code such as US or DE")
    max_age = root.integer("max_event_age_days", 7, 1, 28)
    skew = root.integer("max_clock_skew_seconds", 300, 0, 86400)
    strict = root.boolean("strict_event_names", False)
    log_level = (root.string("log_level", "info") or "info").lower()
    if log_level not in _LOG_LEVELS:
        root.problem("log_level", f"must be one of {', '.join(_LOG_LEVELS)}")
    server = root.table("server")
    host = server.string("host", "127.0.0.1") or "127.0.0.1"
    port = server.integer("port", 8080, 1, 65535)
    server.finish()
    names_table = root.table("event_names")
    event_names = _read_event_names(names_table)
    pixels = [p for t in root.tables("pixels") if (p := _read_pixel(t, env, problems))]
    outbox = read_outbox(root.table("outbox"), env)
    delivery = read_delivery(root.table("delivery"))
    server_api = read_server_api(root.table("server_api"), env, problems)
    browser = read_browser(root.table("browser"))
    cookies = read_cookies(root.table("cookies"), env, problems)
    root.finish()
    pixels = _apply_env_pixel(pixels, env, problems)
    seen: set[str] = set()
    for pixel in pixels:
        if pixel.id in seen:
            problems.append(f"pixels: pixel {pixel.id} is configured twice")
        seen.add(pixel.id)
    if not pixels and not problems:
        problems.append(
            "pixels: none configured (set TIKTOK_PIXEL_ID and TIKTOK_ACCESS_TOKEN, "
            "or add a [[pixels]] table to the config file)"
        )
    if problems:
        raise ConfigError(problems)
    settings = Settings(
        pixels=tuple(pixels),
        api_base=api_base,
        api_timeout_seconds=timeout,
        host=host,
        port=port,
        default_phone_region=region,
        max_event_age_days=max_age,
        max_clock_skew_seconds=skew,
        strict_event_names=strict,
        event_names=event_names,
        log_level=log_level,
        outbox=outbox,
        delivery=delivery,
        server_api=server_api,
        browser=browser,
        cookies=cookies,
    )
    if overrides:
        settings = _with_overrides(settings, overrides)
    return settings


def _with_overrides(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the config file (argument, else GATEWAY_CONFIG, else none) and the environment."""
    env = os.environ if env is None else env
    path = path or env.get("GATEWAY_CONFIG") or None
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError([f"config file {path}: not found"]) from None
        except OSError as exc:
            raise ConfigError([f"config file {path}: {exc.strerror}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"config file {path}: not valid TOML: {exc}"]) from None
    return parse_settings(data, env, overrides=overrides)
