"""Failed console logins from every address together have one budget (shared by replicas), and
it cannot lock out a browser that logged in before: its failures have a budget of their own."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayServer
from tests.test_console import PASSWORD

BURST = 30  # the default: 30 failed logins a minute, from every address together
PROXY = {"trusted_proxies": ["127.0.0.0/8"]}  # the test client is the proxy: X-Forwarded-For


def _client(url: str | httpx.URL) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=10)


@pytest.fixture
def gateways(
    serve_gateway: Callable[..., GatewayServer],
) -> Iterator[Callable[..., httpx.Client]]:
    """A client of a new gateway behind a trusted proxy (`console` options merged in)."""
    made: list[httpx.Client] = []

    def make(url: str | None = None, **console: Any) -> httpx.Client:
        toml: dict[str, Any] = {"network": PROXY, "console": {"admin_password": PASSWORD}}
        toml["console"].update(console)
        if url is not None:
            toml["outbox"] = {"url": url}
        made.append(_client(serve_gateway(**toml).url))
        return made[-1]

    yield make
    for client in made:
        client.close()


def _login(
    client: httpx.Client, address: str, password: str = "wrong-guess", **options: Any
) -> httpx.Response:
    headers = {"X-Forwarded-For": address}
    return client.post("/console/login", data={"password": password}, headers=headers, **options)


def _address(n: int) -> str:
    return f"198.51.{n // 200}.{n % 200 + 1}"


def _refills(since: float) -> int:
    """Failures the budget gave back since `since` (one every 60/30 s), and one for rounding."""
    return int((time.monotonic() - since) / (60 / BURST)) + 1


def test_a_hundred_addresses_guessing_five_times_share_one_budget(
    gateways: Callable[..., httpx.Client],
) -> None:
    client = gateways()
    since = time.monotonic()
    statuses: Counter[int] = Counter()
    waits = set()
    for _ in range(5):  # each address within its own budget of 5 a minute
        for n in range(100):
            answer = _login(client, _address(n))
            statuses[answer.status_code] += 1
            if answer.status_code == 429:
                waits.add(int(answer.headers["retry-after"]))
    assert set(statuses) == {401, 429}
    assert BURST <= statuses[401] <= BURST + _refills(since), statuses
    assert min(waits) >= 1


def test_the_operators_browser_still_logs_in_while_strangers_cannot(
    gateways: Callable[..., httpx.Client],
) -> None:
    client = gateways()
    operator = _login(client, "203.0.113.5", PASSWORD)
    assert operator.status_code == 303
    device = next(c for c in operator.headers.get_list("set-cookie") if "_device=" in c)
    assert "HttpOnly" in device and "SameSite=Strict" in device and "Path=/console" in device
    page = client.get("/console").text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert csrf is not None
    assert client.post("/console/logout", data={"csrf": csrf.group(1)}).status_code == 303
    kept = dict(client.cookies)  # the device cookie outlives the session
    assert list(kept) == ["ttgw_console_device"]
    since = time.monotonic()
    with _client(client.base_url) as attacker:
        for n in range(BURST + _refills(since) + 5):
            _login(attacker, _address(n))
        stranger = _login(attacker, "192.0.2.44", PASSWORD)  # a new browser, the right password
        assert stranger.status_code == 429 and int(stranger.headers["retry-after"]) >= 1
        assert "set-cookie" not in stranger.headers  # the password was not even compared
    moved = _login(client, "192.0.2.200", PASSWORD)  # the operator, from another network
    assert moved.status_code == 303


def test_a_known_browsers_wrong_passwords_have_a_budget_of_their_own(
    gateways: Callable[..., httpx.Client],
) -> None:
    client = gateways()
    assert _login(client, "203.0.113.5", PASSWORD).status_code == 303
    client.cookies.delete("ttgw_console")  # only the device cookie: a stolen copy, say
    statuses = [_login(client, _address(n)).status_code for n in range(8)]
    assert statuses == [401] * 5 + [429] * 3  # new addresses do not buy it more guesses
    with _client(client.base_url) as stranger:
        assert _login(stranger, "192.0.2.9").status_code == 401  # the global budget is intact


def test_replicas_on_one_redis_share_the_budget(
    gateways: Callable[..., httpx.Client], redis_url: str
) -> None:
    a, b = gateways(redis_url), gateways(redis_url)
    since = time.monotonic()
    statuses: Counter[int] = Counter()
    for n in range(2 * BURST):  # spread over both replicas, a new address each time
        statuses[_login((a, b)[n % 2], _address(n)).status_code] += 1
    # each replica alone saw at most half the budget: Redis refused the rest
    assert BURST <= statuses[401] <= BURST + _refills(since), statuses
    assert statuses[429] == 2 * BURST - statuses[401]


def test_a_budget_of_0_is_none(gateways: Callable[..., httpx.Client]) -> None:
    client = gateways(login_failures_per_minute_all=0)
    statuses = {_login(client, _address(n)).status_code for n in range(2 * BURST)}
    assert statuses == {401}
