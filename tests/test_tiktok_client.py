"""The Events API client's classification of every row of the spec's response table.

Each case scripts the real fake server over loopback; nothing here mocks the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.core.event import Destination, Event
from gateway.delivery.client import EventsApiClient, OutcomeKind, classify
from gateway.fake_api import FakeEventsApi, Fault
from gateway.settings import Secret
from tests.conftest import PIXEL, TOKEN

pytestmark = pytest.mark.anyio

DESTINATION = Destination("web", PIXEL)
EVENT = Event(
    destination=DESTINATION,
    event="Purchase",
    event_time=1_732_300_000,
    event_id="e-1",
    page={"url": "https://shop.example/"},
)


@pytest.fixture
async def client(fake_api: FakeEventsApi) -> AsyncIterator[EventsApiClient]:
    async with EventsApiClient(fake_api.url, timeout=0.5) as api:
        yield api


@pytest.mark.parametrize(
    ("fault", "kind", "code"),
    [
        (None, OutcomeKind.DELIVERED, 0),
        (Fault(code=20001, message="partial success"), OutcomeKind.DELIVERED, 20001),
        (Fault(code=40002, message="Invalid value for event_id"), OutcomeKind.PERMANENT, 40002),
        (Fault(code=40000, message="invalid parameter"), OutcomeKind.PERMANENT, 40000),
        (Fault(code=40001, message="no permission"), OutcomeKind.PERMANENT, 40001),
        (Fault(code=40100, message="QPS limit reached"), OutcomeKind.RETRY, 40100),
        (Fault(code=40105, message="token revoked"), OutcomeKind.PERMANENT, 40105),
        (Fault(code=40700, message="?"), OutcomeKind.RETRY, 40700),
        (Fault(code=50000, message="internal error"), OutcomeKind.RETRY, 50000),
        (Fault(code=51039, message="timeout"), OutcomeKind.RETRY, 51039),
        (Fault(status=429, retry_after=7), OutcomeKind.RETRY, None),
        (Fault(status=503), OutcomeKind.RETRY, None),
        (Fault(status=500), OutcomeKind.RETRY, None),
        (Fault(status=404), OutcomeKind.PERMANENT, None),
        (Fault(delay=2.0), OutcomeKind.RETRY, None),
        (Fault(drop=True), OutcomeKind.RETRY, None),
    ],
    ids=lambda v: repr(v) if not isinstance(v, Fault) else "fault",
)
async def test_every_answer_is_classified(
    client: EventsApiClient,
    fake_api: FakeEventsApi,
    fault: Fault | None,
    kind: OutcomeKind,
    code: int | None,
) -> None:
    if fault is not None:
        fake_api.add_fault(fault)
    outcome = await client.send(DESTINATION, [EVENT], Secret(TOKEN))
    assert outcome.kind is kind, outcome
    assert outcome.code == code
    if fault is not None and fault.message:
        assert outcome.message == fault.message
    assert TOKEN not in repr(outcome)


async def test_429_carries_the_retry_after_hint(
    client: EventsApiClient, fake_api: FakeEventsApi
) -> None:
    fake_api.add_fault(status=429, retry_after=7)
    outcome = await client.send(DESTINATION, [EVENT], Secret(TOKEN))
    assert outcome.http_status == 429
    assert outcome.retry_after == 7.0


async def test_timeout_and_drop_are_named(client: EventsApiClient, fake_api: FakeEventsApi) -> None:
    fake_api.add_fault(delay=2.0)
    timeout = await client.send(DESTINATION, [EVENT], Secret(TOKEN))
    assert timeout.message.startswith("timeout")
    fake_api.add_fault(drop=True)
    dropped = await client.send(DESTINATION, [EVENT], Secret(TOKEN))
    assert dropped.message.startswith("connection error")


async def test_wrong_token_is_40105_with_an_alert(client: EventsApiClient) -> None:
    outcome = await client.send(DESTINATION, [EVENT], Secret("wrong-token-value"))
    assert (outcome.kind, outcome.code, outcome.alert) == (OutcomeKind.PERMANENT, 40105, True)
    assert "wrong-token-value" not in repr(outcome)


async def test_client_keeps_one_connection_alive(
    client: EventsApiClient, fake_api: FakeEventsApi
) -> None:
    for _ in range(5):
        assert (await client.send(DESTINATION, [EVENT], Secret(TOKEN))).delivered
    assert fake_api.events_accepted == 5
    assert fake_api.connections_opened == 1


async def test_connection_refused_is_retry() -> None:
    async with EventsApiClient("http://127.0.0.1:9", timeout=0.5) as api:
        outcome = await api.send(DESTINATION, [EVENT], Secret(TOKEN))
    assert outcome.kind is OutcomeKind.RETRY


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, b"<html>proxy page</html>", OutcomeKind.RETRY),
        (200, b'{"code": "0"}', OutcomeKind.RETRY),
        (401, b"unauthorized", OutcomeKind.PERMANENT),
        (408, b"", OutcomeKind.RETRY),
        (502, b"bad gateway", OutcomeKind.RETRY),
    ],
)
def test_odd_answers(status: int, body: bytes, kind: OutcomeKind) -> None:
    assert classify(status, body, {}).kind is kind
