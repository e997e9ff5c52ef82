"""One event TikTok refuses must not take its batch-mates to the dead letters."""

from __future__ import annotations

import pytest

from gateway.delivery.isolation import budget, named_position, split
from gateway.fake_api import Fault
from tests import test_dispatch
from tests.conftest import PIXEL, TOKEN, make_event
from tests.test_dispatch import Harness

pytestmark = pytest.mark.anyio
harness = test_dispatch.harness  # the dispatcher's fixture: an outbox, a client, the fake
BAD = f"ev-{PIXEL}-1234"


@pytest.mark.parametrize(
    "message",
    [
        "Batch.{position}.properties.contents.0.content_id: Not a valid string",  # TikTok
        "Invalid value for data[{position}].properties.value: not a valid number.",  # our fake
        "Invalid value for event_id: not a valid string.",  # no position: halves
    ],
)
async def test_one_refused_event_in_2500_is_the_only_dead_letter(
    harness: Harness, message: str
) -> None:
    harness.fake.add_fault(Fault(code=40002, message=message, event_id=BAD, times=None))
    await harness.outbox.add([make_event(i) for i in range(2500)])
    dispatcher = harness.dispatcher()
    await dispatcher.drain()
    delivered = harness.delivered_ids()
    assert len(delivered) == len(set(delivered)) == 2499 and BAD not in delivered
    [dead] = await harness.outbox.dead_letters()
    assert dead.event.event_id == BAD and dead.code == 40002
    assert message.split("{")[0] in dead.reason  # TikTok's own message
    extra = dispatcher.stats.isolation_requests
    assert 0 < extra <= (1 if "{position}" in message else 2 * 10)  # ≈ 2·log₂(1000)


async def test_a_refusal_of_every_event_stops_at_the_budget(harness: Harness) -> None:
    harness.fake.add_fault(
        Fault(code=40002, message="Invalid value for event_source_id", times=None)
    )
    await harness.outbox.add([make_event(i) for i in range(1000)])
    dispatcher = harness.dispatcher()
    await dispatcher.drain()
    assert dispatcher.stats.isolation_requests <= budget(1000)
    assert len(await harness.outbox.dead_letters(2000)) == 1000
    assert harness.delivered_ids() == []


def test_positions_are_read_in_every_known_form() -> None:
    assert named_position("Batch.3.properties.contents.0.content_id: x", 10) == 3
    assert named_position("Invalid value for data[7].event_time", 10) == 7
    assert named_position("data.2.user.email: x", 10) == 2
    assert named_position("data[12].event", 10) is None  # not in this request
    assert named_position("Invalid value for event_id: not a valid string.", 10) is None
    assert split(["a", "b", "c"], 1) == (["b"], [["a", "c"]])
    assert split(["a", "b", "c"], None) == ([], [["a"], ["b", "c"]])


async def test_a_token_tiktok_echoes_never_reaches_a_dead_letter(harness: Harness) -> None:
    harness.fake.add_fault(
        Fault(code=40002, message=f"Invalid access_token: {TOKEN} is malformed", times=None)
    )
    await harness.outbox.add([make_event(1)])
    await harness.dispatcher().drain()
    [dead] = await harness.outbox.dead_letters()
    assert TOKEN not in dead.reason and "[REDACTED]" in dead.reason
