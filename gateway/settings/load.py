"""Settings: one TOML file plus environment variables, validated once at start-up.

Everything is parsed at the edge into frozen, typed objects; the rest of the gateway never
sees raw TOML. Validation collects every problem before failing so `check-config` can print
them all at once, one line each, naming the field and why. Secrets are held in `Secret`,
whose repr never shows the value, and may be written as `env:NAME` or `file:/path` so the
file itself holds none.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.core.errors import ConfigError
from gateway.core.secret import Secret
from gateway.settings.declared import move_deprecated, read_section
from gateway.settings.model import PIXEL_ID, PixelConfig, Settings, site_origin
from gateway.settings.reader import TableReader


def _env_origins(env: Mapping[str, str], problems: list[str]) -> tuple[str, ...] | None:
    """TIKTOK_PIXEL_ORIGINS: the sites allowed to send beacons, comma-separated."""
    raw = env.get("TIKTOK_PIXEL_ORIGINS", "").strip()
    if not raw:
        return None
    origins = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        try:
            origins.append(site_origin(part))
        except ValueError as exc:
            problems.append(f"TIKTOK_PIXEL_ORIGINS: {exc}")
    return tuple(origins)


def _apply_env_pixel(
    pixels: tuple[PixelConfig, ...], env: Mapping[str, str], problems: list[str]
) -> tuple[PixelConfig, ...]:
    """The one-pixel quick start: TIKTOK_PIXEL_ID + TIKTOK_ACCESS_TOKEN add or override a pixel,
    and TIKTOK_PIXEL_ORIGINS lets a site send it beacons without a config file."""
    pixel_id = env.get("TIKTOK_PIXEL_ID", "").strip()
    token = env.get("TIKTOK_ACCESS_TOKEN", "").strip()
    test_code = env.get("TIKTOK_TEST_EVENT_CODE", "").strip() or None
    origins = _env_origins(env, problems)
    if not pixel_id:
        for name, given in (("TIKTOK_ACCESS_TOKEN", token), ("TIKTOK_PIXEL_ORIGINS", origins)):
            if given:
                problems.append(f"TIKTOK_PIXEL_ID: not set, but {name} is")
        return pixels
    if not PIXEL_ID.fullmatch(pixel_id):
        problems.append(f"TIKTOK_PIXEL_ID: {pixel_id!r} is not a pixel code")
        return pixels
    existing = next((p for p in pixels if p.id == pixel_id), None)
    if not token and existing is None:
        problems.append("TIKTOK_ACCESS_TOKEN: missing (the Events API access token)")
        return pixels
    secret = Secret(token, source="TIKTOK_ACCESS_TOKEN") if token else None
    if existing is not None:
        updated = dataclasses.replace(
            existing,
            access_token=secret or existing.access_token,
            test_event_code=test_code or existing.test_event_code,
            origins=existing.origins if origins is None else origins,
        )
        return tuple(updated if p is existing else p for p in pixels)
    assert secret is not None
    pixel = PixelConfig(
        id=pixel_id, access_token=secret, test_event_code=test_code, origins=origins or ()
    )
    return (*pixels, pixel)


def _dangerous(settings: Settings) -> list[str]:
    """Settings that would make the gateway unsafe: refused, not warned about."""
    problems = []
    written = "browser" if settings.browser.trusted_proxies is not None else "network"
    for family in (4, 6):
        networks = [n for n in settings.network.trusted_proxies if n.version == family]
        covered = ipaddress.collapse_addresses(networks)  # type: ignore[type-var]
        if any(network.prefixlen == 0 for network in covered):
            whole = [n for n in networks if n.prefixlen == 0]
            listed = f"{whole[0]} trusts" if whole else f"{', '.join(map(str, networks))} trust"
            problems.append(
                f"{written}.trusted_proxies: {listed} every address: any client could claim "
                "any IP (list your proxies' addresses)"
            )
    keys = {k.reveal() for k in settings.server_api.api_keys}
    others = {
        "a cookie secret": {s.reveal() for s in settings.cookies.secrets},
        "the console password": {settings.console.admin_password.reveal()} - {""},
        "a postback secret": {s.secret.reveal() for s in settings.postbacks.sources.values()},
    }
    for what, values in others.items():
        if keys & values:
            problems.append(f"server_api.api_keys: a key equals {what}; use different ones")
    return problems


def _pixel_problems(pixels: tuple[PixelConfig, ...]) -> list[str]:
    problems = []
    seen: set[str] = set()
    for pixel in pixels:
        if pixel.id in seen:
            problems.append(f"pixels: pixel {pixel.id} is configured twice")
        seen.add(pixel.id)
    return problems


def _rule_pixel_problems(settings: Settings, pixels: tuple[PixelConfig, ...]) -> list[str]:
    """A rule's pixel must be configured (or left out when there is only one)."""
    problems = []
    ids = {p.id for p in pixels}
    for index, rule in enumerate(settings.postbacks.rules.rules):
        pixel = rule.action.pixel
        if pixel is None and len(ids) > 1:
            problems.append(f"postbacks.rules[{index}].pixel: required: several pixels")
        elif pixel is not None and pixel not in ids:
            problems.append(f"postbacks.rules[{index}].pixel: {pixel} is not a configured pixel")
    return problems


def parse_settings(
    data: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    overrides: Mapping[str, Any] | None = None,
    secrets: bool = True,
) -> Settings:
    """Build `Settings` from parsed TOML and an environment, or raise `ConfigError`.

    `overrides` come from the command line: `host` and `port` replace the [server] ones,
    `metrics_port` the [metrics] one. `secrets=False` (commands that send nothing): a
    secret whose variable or file is missing is left empty instead of refused.
    """
    problems: list[str] = []
    table = TableReader(data, "", problems, secrets_needed=secrets)
    settings = read_section(Settings, table, env, problems)
    settings = move_deprecated(settings, data, problems)
    pixels = _apply_env_pixel(settings.pixels, env, problems)
    problems.extend(_pixel_problems(pixels))
    problems.extend(_dangerous(settings))
    if pixels:
        problems.extend(_rule_pixel_problems(settings, pixels))
    if not pixels and not problems:
        problems.append(
            "pixels: none configured (set TIKTOK_PIXEL_ID and TIKTOK_ACCESS_TOKEN, "
            "or add a [[pixels]] table to the config file)"
        )
    if problems:
        raise ConfigError(problems)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    metrics_port = given.pop("metrics_port", settings.metrics.port)
    server = dataclasses.replace(settings.server, **given)
    metrics = dataclasses.replace(settings.metrics, port=metrics_port)
    if metrics.port and metrics.port == server.port:
        raise ConfigError(
            [f"metrics.port: {server.port} is the public port; metrics need a port of their own"]
        )
    return dataclasses.replace(settings, pixels=pixels, server=server, metrics=metrics)


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    secrets: bool = True,
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
    return parse_settings(data, env, overrides=overrides, secrets=secrets)
