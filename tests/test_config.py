"""Configuration: the quick start, the file form, secret references and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.core.errors import ConfigError
from gateway.settings import DEFAULT_API_BASE, load_settings, parse_settings

QUICK_ENV = {"TIKTOK_PIXEL_ID": "CQUICK001", "TIKTOK_ACCESS_TOKEN": "tok-quick-123"}


def problems_of(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(data, env or {})
    return caught.value.problems


def test_quick_start_needs_only_two_variables() -> None:
    settings = parse_settings({}, QUICK_ENV)
    assert [p.id for p in settings.pixels] == ["CQUICK001"]
    assert settings.pixels[0].access_token.reveal() == "tok-quick-123"
    assert settings.api_base == DEFAULT_API_BASE


def test_api_base_and_test_code_from_the_environment() -> None:
    env = {**QUICK_ENV, "TIKTOK_API_BASE": "http://127.0.0.1:9/", "TIKTOK_TEST_EVENT_CODE": "T9"}
    settings = parse_settings({}, env)
    assert settings.api_base == "http://127.0.0.1:9"
    assert settings.pixels[0].test_event_code == "T9"


def test_a_site_needs_no_file_its_origins_come_from_the_environment() -> None:
    env = {**QUICK_ENV, "TIKTOK_PIXEL_ORIGINS": "https://Shop.example, https://www.shop.example/"}
    [pixel] = parse_settings({}, env).pixels
    assert pixel.origins == ("https://shop.example", "https://www.shop.example")


def test_environment_origins_are_checked_and_replace_the_files() -> None:
    bad = {**QUICK_ENV, "TIKTOK_PIXEL_ORIGINS": "https://shop.example,shop.example"}
    assert problems_of({}, bad) == [
        "TIKTOK_PIXEL_ORIGINS: 'shop.example' is not an origin like https://shop.example"
    ]
    alone = {"TIKTOK_PIXEL_ORIGINS": "https://shop.example"}
    assert problems_of({}, alone) == ["TIKTOK_PIXEL_ID: not set, but TIKTOK_PIXEL_ORIGINS is"]
    file_pixel = {"id": "CQUICK001", "access_token": "t", "origins": ["https://old.example"]}
    env = {"TIKTOK_PIXEL_ID": "CQUICK001", "TIKTOK_PIXEL_ORIGINS": "https://new.example"}
    [pixel] = parse_settings({"pixels": [file_pixel]}, env).pixels
    assert pixel.origins == ("https://new.example",)
    [kept] = parse_settings({"pixels": [file_pixel]}, QUICK_ENV).pixels
    assert kept.origins == ("https://old.example",)


def test_a_key_in_the_file_that_the_environment_overrides_is_still_a_known_key() -> None:
    """The image sets GATEWAY_METRICS_HOST; a mounted file saying [metrics] host must load."""
    data = {"metrics": {"host": "127.0.0.1"}, "log_format": "text"}
    env = {**QUICK_ENV, "GATEWAY_METRICS_HOST": "0.0.0.0", "GATEWAY_LOG_FORMAT": "JSON"}
    settings = parse_settings(data, env)
    assert (settings.metrics.host, settings.log_format) == ("0.0.0.0", "json")
    assert parse_settings(data, QUICK_ENV).log_format == "text"


def test_file_form_with_several_pixels_and_secret_references(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-from-file\n")
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
default_phone_region = "de"
max_event_age_days = 28
strict_event_names = true

[event_names]
checkout_done = "Purchase"
signup = ["CompleteRegistration", "Lead"]

[[pixels]]
id = "CSHOP0001"
access_token = "env:SHOP_TOKEN"
test_event_code = "TEST1"
limited_data_use = true
origins = ["https://Shop.example/"]

[[pixels]]
id = "7300000000000000001"
event_source = "offline"
access_token = "file:{token_file}"
"""
    )
    settings = load_settings(config, {"SHOP_TOKEN": "tok-from-env"})
    shop, offline = settings.pixels
    assert shop.access_token.reveal() == "tok-from-env"
    assert shop.origins == ("https://shop.example",)
    assert (shop.test_event_code, shop.limited_data_use) == ("TEST1", True)
    assert offline.access_token.reveal() == "tok-from-file"
    assert offline.event_source == "offline"
    assert settings.default_phone_region == "DE"
    assert settings.event_names["signup"] == ("CompleteRegistration", "Lead")
    assert settings.strict_event_names and settings.max_event_age_days == 28


def test_secrets_never_appear_in_repr_or_redacted_output() -> None:
    settings = parse_settings({}, QUICK_ENV)
    assert "tok-quick-123" not in repr(settings)
    assert "tok-quick-123" not in str(settings.redacted())
    assert settings.redacted()["pixels"][0]["access_token"] == "<secret from TIKTOK_ACCESS_TOKEN>"


def test_every_problem_is_reported_with_its_field() -> None:
    problems = problems_of(
        {
            "max_event_age_days": "seven",
            "colour": "blue",
            "pixels": [{"id": "CSHOP0001"}, {"id": "CSHOP0002", "access_token": "env:MISSING"}],
            "server": {"port": 70000},
        }
    )
    assert "max_event_age_days: must be an integer, got str 'seven'" in problems
    assert "colour: unknown key" in problems
    assert any(p.startswith("pixels[0].access_token: missing") for p in problems)
    assert "pixels[1].access_token: environment variable MISSING is not set or empty" in problems
    assert "server.port: must be between 1 and 65535, got 70000" in problems


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"max_event_age_days": 60}, "max_event_age_days: must be between 1 and 28, got 60"),
        ({"default_phone_region": "XX"}, "default_phone_region: 'XX' is not a region code"),
        ({"strict_event_names": "yes"}, "strict_event_names: must be true or false"),
        ({"event_names": {"x": []}}, "event_names.x: must be a TikTok event name"),
        ({"pixels": [{"id": "bad id!", "access_token": "t"}]}, "pixels[0].id: 'bad id!'"),
        (
            {"pixels": [{"id": "CSHOP1", "access_token": "t", "origin": "x"}]},
            "pixels[0].origin: unknown key",
        ),
        (
            {"pixels": [{"id": "CSHOP1", "access_token": "t", "origins": ["shop"]}]},
            "pixels[0].origins",
        ),
        (
            {"pixels": [{"id": "CSHOP1", "access_token": "t", "event_source": "tv"}]},
            "pixels[0].event_source",
        ),
        ({"api_base": "ftp://x"}, "api_base"),
    ],
)
def test_bad_values_are_named(data: dict[str, Any], expected: str) -> None:
    problems = problems_of(data, QUICK_ENV)
    assert any(p.startswith(expected) for p in problems), problems


def test_no_pixel_at_all_is_an_error_that_says_what_to_set() -> None:
    assert any("TIKTOK_PIXEL_ID" in p for p in problems_of({}))


def test_missing_and_invalid_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", {})
    broken = tmp_path / "broken.toml"
    broken.write_text("pixels = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken, {})


@pytest.mark.parametrize(
    ("browser", "expected"),
    [
        (
            {"beacon_path": "/collect"},
            "browser.beacon_path: '/collect' contains a word ad blockers",
        ),
        ({"snippet_path": "/tiktok.js"}, "browser.snippet_path: '/tiktok.js' contains a word"),
        ({"beacon_path": "/gw.js"}, "browser.beacon_path: must differ from snippet_path"),
        ({"beacon_path": "no-slash"}, "browser.beacon_path: 'no-slash' is not a path"),
        ({"trusted_proxies": ["10.0.0.0/33"]}, "browser.trusted_proxies: '10.0.0.0/33'"),
    ],
)
def test_browser_paths_and_proxies_are_checked(browser: dict[str, Any], expected: str) -> None:
    problems = problems_of({"browser": browser}, QUICK_ENV)
    assert any(p.startswith(expected) for p in problems), problems


def test_browser_paths_are_configurable() -> None:
    settings = parse_settings(
        {"browser": {"snippet_path": "/s/a.js", "beacon_path": "/s/b"}}, QUICK_ENV
    )
    assert (settings.browser.snippet_path, settings.browser.beacon_path) == ("/s/a.js", "/s/b")


def test_cookie_settings_are_checked() -> None:
    problems = problems_of(
        {"cookies": {"same_site": "None", "secure": False, "secrets": ["short"]}}, QUICK_ENV
    )
    assert any(p.startswith("cookies.same_site: None requires secure") for p in problems)
    assert any(p.startswith("cookies.secrets: the secret from inline is shorter") for p in problems)


def test_outbox_passwords_are_redacted_and_scrubbed_from_logs() -> None:
    url = "redis://user:s3cret-pass@redis.internal:6379/0?password=x"
    settings = parse_settings({"outbox": {"url": url}}, QUICK_ENV)
    shown = str(settings.redacted())
    assert "s3cret-pass" not in shown and "password=x" not in shown
    assert "s3cret-pass" in settings.secrets()


def test_every_secret_reaches_the_log_filter_and_file_secrets_are_named(tmp_path: Path) -> None:
    """Postback sources are a mapping: their keys are secrets all the same (the log filter
    once missed them); `file:` secrets are the files a reload watches."""
    token = tmp_path / "token"
    token.write_text("file-token-0123456789\n")
    data = {
        "pixels": [{"id": "CFILEPIXEL01", "access_token": f"file:{token}"}],
        "postbacks": {"sources": {"lms": {"secret": "lms-key-0123456789abcdef"}}},
    }
    settings = parse_settings(data, {})
    assert set(settings.secrets()) == {"file-token-0123456789", "lms-key-0123456789abcdef"}
    assert settings.secret_files() == [str(token)]


def test_watch_files_seconds_is_off_or_at_least_a_tenth() -> None:
    assert parse_settings({"watch_files_seconds": 0}, QUICK_ENV).watch_files_seconds == 0
    problems = problems_of({"watch_files_seconds": 0.01}, QUICK_ENV)
    assert problems == ["watch_files_seconds: must be 0 (off) or at least 0.1"]


def test_redacted_output_reads_back_as_the_same_settings() -> None:
    """redacted() is derived from the dataclasses, so it names every key as the file does."""
    data = {
        "server": {"port": 9001},
        "delivery": {"batch_size": 7, "separate_process": False},
        "browser": {"trusted_proxies": ["10.0.0.0/8"], "client_ip_header": "CF-Connecting-IP"},
        "cookies": {"same_site": "strict", "domain": ".Shop.example"},
        "event_names": {"signup": ["Lead"]},
    }
    settings = parse_settings(data, QUICK_ENV)
    shown = settings.redacted()
    del shown["pixels"]  # its token shows as "<secret from …>"
    assert parse_settings(shown, QUICK_ENV) == settings


def test_settings_that_open_the_gateway_up_are_refused() -> None:
    problems = problems_of(
        {
            "browser": {"trusted_proxies": ["0.0.0.0/0"]},
            "server_api": {"api_keys": ["same-secret-0123456789"]},
            "cookies": {"secrets": ["same-secret-0123456789"]},
        },
        QUICK_ENV,
    )
    assert any(p.startswith("browser.trusted_proxies: 0.0.0.0/0 trusts every") for p in problems)
    assert any(p.startswith("server_api.api_keys: a key equals a cookie secret") for p in problems)


def test_trusted_networks_that_add_up_to_everyone_or_keys_reused_are_refused() -> None:
    """Issue 21.15: two halves of the internet passed without a word, and a console password
    or postback secret equal to an API key."""
    problems = problems_of(
        {
            "network": {"trusted_proxies": ["0.0.0.0/1", "128.0.0.0/1", "10.0.0.0/8"]},
            "server_api": {"api_keys": ["same-secret-0123456789", "other-key-0123456789"]},
            "console": {"admin_password": "same-secret-0123456789"},
            "postbacks": {"sources": {"lms": {"secret": "other-key-0123456789"}}},
        },
        QUICK_ENV,
    )
    assert any(
        p.startswith("network.trusted_proxies: 0.0.0.0/1, 128.0.0.0/1, 10.0.0.0/8 trust every")
        for p in problems
    ), problems
    assert "server_api.api_keys: a key equals the console password; use different ones" in problems
    assert "server_api.api_keys: a key equals a postback secret; use different ones" in problems
    wide = parse_settings({"network": {"trusted_proxies": ["1.0.0.0/2"]}}, QUICK_ENV)
    assert any("0.0.0.0/2 trusts 1,073,741,824 public" in w for w in wide.warnings())
    private = parse_settings({"network": {"trusted_proxies": ["10.0.0.0/8"]}}, QUICK_ENV)
    assert not any("trusted_proxies" in w for w in private.warnings())


def test_risky_settings_are_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[[pixels]]\nid = "CSHOP0001"\naccess_token = "tok-inline-0123"\n'
        'origins = ["http://shop.example"]\n'
    )
    warnings = load_settings(config, {}).warnings()
    assert any("the access token is written in the file" in w for w in warnings)
    assert any("http://shop.example is plain http" in w for w in warnings)
    assert parse_settings({}, QUICK_ENV).warnings() == []  # the quick start is clean


def test_client_address_settings_live_in_network() -> None:
    """They govern every endpoint (server API, relay, postbacks, console), not the browser's."""
    data = {"network": {"trusted_proxies": ["10.0.0.0/8"], "client_ip_header": "X-Real-IP"}}
    settings = parse_settings(data, QUICK_ENV)
    assert [str(n) for n in settings.network.trusted_proxies] == ["10.0.0.0/8"]
    assert settings.network.client_ip_header == "x-real-ip"
    assert settings.warnings() == []
    problems = problems_of({"network": {"trusted_proxies": ["0.0.0.0/0"]}}, QUICK_ENV)
    assert any(p.startswith("network.trusted_proxies: 0.0.0.0/0 trusts every") for p in problems)


def test_the_old_browser_keys_still_work_with_a_deprecation_warning() -> None:
    data = {"browser": {"trusted_proxies": ["10.0.0.0/8"], "client_ip_header": "X-Real-IP"}}
    settings = parse_settings(data, QUICK_ENV)
    assert settings == parse_settings(
        {"network": {"trusted_proxies": ["10.0.0.0/8"], "client_ip_header": "X-Real-IP"}},
        QUICK_ENV,
    )
    assert settings.warnings() == [
        "browser.trusted_proxies is deprecated: write it as [network] trusted_proxies",
        "browser.client_ip_header is deprecated: write it as [network] client_ip_header",
    ]
    shown = settings.redacted()
    assert "trusted_proxies" not in shown["browser"]
    assert shown["network"]["trusted_proxies"] == ["10.0.0.0/8"]


def test_a_key_in_both_its_old_and_its_new_place_is_an_error() -> None:
    problems = problems_of(
        {
            "browser": {"trusted_proxies": ["10.0.0.0/8"]},
            "network": {"trusted_proxies": ["192.168.0.0/16"]},
        },
        QUICK_ENV,
    )
    assert problems == [
        "browser.trusted_proxies: moved to [network] trusted_proxies, which is set too: "
        "remove it from [browser]"
    ]
