"""Every credential is compared in one place (`http/auth.py`): what each endpoint accepts,
and what a configuration reload changes (pixel tokens, postback secrets) and keeps."""

from __future__ import annotations

import dataclasses

import pytest
from starlette.requests import Request

from gateway.core.secret import Secret
from gateway.http.auth import Auth, Credentials, matches
from gateway.http.failed_auth import FailedAuthLimit
from gateway.http.rate_limit import Budget
from gateway.settings import Settings, parse_settings
from gateway.settings.live import LiveSettings

API_KEY = "server-api-key-0123456789"
PIXEL_A, TOKEN_A = "CPIXELAAAA01", "token-a-0123456789"
PIXEL_B, TOKEN_B = "CPIXELBBBB02", "token-b-0123456789"
LMS_SECRET = "lms-secret-0123456789abcdef"


@pytest.fixture
def settings() -> Settings:
    data = {
        "pixels": [
            {"id": PIXEL_A, "access_token": TOKEN_A},
            {"id": PIXEL_B, "access_token": TOKEN_B},
        ],
        "server_api": {"api_keys": [API_KEY]},
        "postbacks": {"sources": {"lms": {"secret": LMS_SECRET}}},
        "console": {"admin_password": "console-password-12"},
        "metrics": {"bearer_tokens": ["metrics-token-0123456789"]},
    }
    return parse_settings(data, {})


def request(*headers: tuple[str, str]) -> Request:
    raw = [(name.encode(), value.encode("latin-1")) for name, value in headers]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw})


def test_api_keys_as_bearer_or_x_api_key(settings: Settings) -> None:
    credentials = Credentials.of(settings)
    assert credentials.api_key(request(("authorization", f"Bearer {API_KEY}")))
    assert credentials.api_key(request(("x-api-key", API_KEY)))
    assert not credentials.api_key(request(("x-api-key", API_KEY[:-1])))
    assert not credentials.api_key(request(("authorization", f"Basic {API_KEY}")))
    assert not credentials.api_key(request())


def test_the_relay_takes_any_token_but_sends_only_for_its_own_pixel(settings: Settings) -> None:
    credentials = Credentials.of(settings)
    for token in (TOKEN_A, TOKEN_B, API_KEY):
        assert credentials.relay_token(token.encode())
    assert not credentials.relay_token(b"") and not credentials.relay_token(b"guess")
    assert credentials.may_relay(TOKEN_A.encode(), PIXEL_A)
    assert not credentials.may_relay(TOKEN_A.encode(), PIXEL_B)
    assert credentials.may_relay(API_KEY.encode(), PIXEL_B)  # the gateway's keys: any pixel
    assert not credentials.may_relay(TOKEN_A.encode(), "CUNKNOWN0001")


def test_postbacks_take_their_secret_in_the_url_or_a_header(settings: Settings) -> None:
    credentials = Credentials.of(settings)
    none = request()
    assert credentials.postback("lms", LMS_SECRET, none)
    assert not credentials.postback("lms", API_KEY, none)  # in the URL: the secret only
    assert not credentials.postback("other", LMS_SECRET, none)
    assert credentials.postback("lms", None, request(("x-api-key", LMS_SECRET)))
    assert credentials.postback("lms", None, request(("authorization", f"Bearer {API_KEY}")))
    assert not credentials.postback("lms", None, none)


def test_console_and_metrics(settings: Settings) -> None:
    credentials = Credentials.of(settings)
    assert credentials.console("console-password-12")
    assert not credentials.console("console-password-1") and not credentials.console("")
    assert not credentials.console("pässword")  # a non-ASCII guess is refused, not an error
    bearer = request(("authorization", "Bearer metrics-token-0123456789"))
    assert credentials.metrics(bearer)
    assert not credentials.metrics(request(("x-api-key", "metrics-token-0123456789")))


@pytest.mark.anyio
async def test_a_reload_swaps_tokens_and_secrets_and_keeps_the_api_keys(
    settings: Settings,
) -> None:
    """API keys do not reload (a change needs a restart); pixel tokens and postback secrets
    do, and a request holding the snapshot it took is judged by that one alone."""
    renewed = dataclasses.replace(
        settings,
        pixels=(dataclasses.replace(settings.pixels[0], access_token=Secret("token-a-new-0123")),),
        server_api=dataclasses.replace(settings.server_api, api_keys=(Secret("new-api-key-0123"),)),
        postbacks=dataclasses.replace(settings.postbacks, sources={}),
    )
    live = LiveSettings(settings, load=lambda: renewed)
    auth = Auth(live, FailedAuthLimit(Budget(0.0, 1), on_refused=lambda: None))
    taken = auth.current
    assert await live.reload()
    now = auth.current
    assert now.may_relay(b"token-a-new-0123", PIXEL_A) and not now.relay_token(TOKEN_B.encode())
    assert not now.postback("lms", LMS_SECRET, request())
    assert now.api_key(request(("x-api-key", API_KEY)))
    assert not now.api_key(request(("x-api-key", "new-api-key-0123")))
    assert taken.may_relay(TOKEN_A.encode(), PIXEL_A) and taken.postback(
        "lms", LMS_SECRET, request()
    )


def test_matches_compares_every_candidate() -> None:
    assert matches("b", (b"a", b"b")) and matches(b"a", (b"a", b"b"))
    assert not matches("", (b"",)) and not matches("c", ())
