"""`OutboxAdmin.find` on both backends: an event_id or an order_id among waiting, retrying
and dead-lettered events, past the first page of a long backlog."""

from __future__ import annotations

import dataclasses
import time

import pytest

from gateway.core.event import Event
from tests.conftest import PIXEL, make_event
from tests.test_outbox import OutboxFactory, make_outbox

pytestmark = pytest.mark.anyio
__all__ = ["make_outbox"]  # the fixture, shared with tests/test_outbox.py


def with_order(number: int, order_id: str) -> Event:
    event = make_event(number)
    return dataclasses.replace(event, properties={"order_id": order_id, "value": 1.0})


async def test_find_by_event_id_or_order_id_in_every_state(make_outbox: OutboxFactory) -> None:
    outbox = await make_outbox()
    await outbox.add([with_order(1, "order-1"), with_order(2, "order-2"), make_event(3)])
    claimed = {c.decode().event_id: c.id for c in await outbox.claim(10, time.time())}
    now = time.time()
    await outbox.retry([claimed[f"ev-{PIXEL}-2"]], now + 600, "HTTP 503")
    await outbox.dead_letter([claimed[f"ev-{PIXEL}-3"]], "code 40002: bad", 40002, now)
    await outbox.add([make_event(n) for n in range(10, 2510)])  # past the first page
    await outbox.add([with_order(9, "order-9")])

    [dead] = await outbox.find(f"ev-{PIXEL}-3")
    assert (dead.state, dead.code, dead.reason) == ("dead_lettered", 40002, "code 40002: bad")
    [retrying] = await outbox.find("order-2")
    assert (retrying.state, retrying.event.event_id) == ("retrying", f"ev-{PIXEL}-2")
    assert retrying.attempts == 1 and "503" in retrying.reason
    [leased] = await outbox.find("order-1")
    assert leased.state in ("in_flight", "pending")  # Redis counts a leased entry as pending
    [newest] = await outbox.find("order-9")
    assert newest.state == "pending" and newest.event.properties["order_id"] == "order-9"
    [oldest] = await outbox.find(f"ev-{PIXEL}-10")  # on the last page read
    assert oldest.state == "pending"
    assert await outbox.find("no-such-id") == []
    assert await outbox.find(f"{PIXEL}") == []  # a part of an id is not the id
