"""Configuration: read once at the edge into frozen, typed objects whose repr hides secrets.

declared.py   how a setting is declared (default, bounds, env, conversion) and read
reader.py     typed reading of one TOML table; descriptors.py: what `ulimit -n` allows
sections.py   server, metrics, outbox, delivery, server API, limits, relay, network, browser…
postbacks.py  lead systems' postbacks: sources, tracking rules (tracking/), the lead context
model.py      pixels and the whole `Settings`; load.py: the file and environment → `Settings`
live.py       the running configuration, reloaded whole or not at all
"""

from gateway.core.secret import Secret
from gateway.settings.load import load_settings, parse_settings
from gateway.settings.model import DEFAULT_API_BASE, PixelConfig, Settings, pick_pixel
from gateway.settings.postbacks import PostbackSettings, PostbackSource
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
    RateLimitSettings,
    RelaySettings,
    ServerApiSettings,
    ServerSettings,
)

__all__ = [
    "DEFAULT_API_BASE",
    "BrowserSettings",
    "ConsoleSettings",
    "CookieSettings",
    "DeliverySettings",
    "ImportSettings",
    "MetricsSettings",
    "NetworkSettings",
    "OutboxSettings",
    "PixelConfig",
    "PostbackSettings",
    "PostbackSource",
    "PrivacySettings",
    "RateLimitSettings",
    "RelaySettings",
    "Secret",
    "ServerApiSettings",
    "ServerSettings",
    "Settings",
    "load_settings",
    "parse_settings",
    "pick_pixel",
]
