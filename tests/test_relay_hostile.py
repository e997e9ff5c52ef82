"""Property tests over real HTTP: whatever body reaches any relay path, the answer is HTTP 200
with TikTok's envelope and a TikTok code — never a 500, never HTML, never another shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ingest.sources.relay import READERS, VERSIONS
from tests.conftest import PIXEL, TOKEN, GatewayServer
from tests.test_hostile_input import events as hostile_events
from tests.test_hostile_input import json_values

EVENT_SET = "7300000000000000009"
PATHS = [f"/open_api/{v}/{name}/" for v in VERSIONS for name in READERS]
CODES = {0, 40000, 40001, 40002, 40105}

V1_USER_KEYS = st.sampled_from(
    ["email", "emails", "phone_number", "phone_numbers", "external_id", "ttp", "odd"]
)
ids = st.one_of(st.sampled_from([PIXEL, EVENT_SET, "CUNKNOWN0001"]), json_values)
v1_contexts = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "ad": st.one_of(json_values, st.fixed_dictionaries({"callback": json_values})),
            "page": st.one_of(json_values, st.just({"url": "https://s.example/"})),
            "user": st.one_of(
                json_values,
                st.dictionaries(V1_USER_KEYS, json_values, max_size=4),
            ),
            "ip": json_values,
            "user_agent": json_values,
            "locale": json_values,
        },
    ),
)
v1_events = st.fixed_dictionaries(
    {"event": st.one_of(st.just("Purchase"), json_values)},
    optional={
        "event_id": json_values,
        "timestamp": json_values,
        "context": v1_contexts,
        "properties": json_values,
        "type": st.one_of(st.just("track"), json_values),
        "test_event_code": json_values,
    },
)
v2_bodies = st.fixed_dictionaries(
    {"event_source": st.one_of(st.just("web"), json_values)},
    optional={
        "event_source_id": st.one_of(st.just(PIXEL), ids),
        "data": st.one_of(json_values, st.lists(hostile_events, max_size=3)),
        "test_event_code": json_values,
        "partner_name": json_values,
    },
)


def v1_bodies(id_field: str, valid_id: str, batch: bool) -> st.SearchStrategy[Any]:
    source_id = st.one_of(st.just(valid_id), ids)
    if batch:
        events = st.one_of(json_values, st.lists(v1_events, max_size=3))
        return st.fixed_dictionaries({id_field: source_id, "batch": events})
    return st.tuples(source_id, v1_events).map(lambda pair: {id_field: pair[0], **pair[1]})


BODIES = {
    "event/track": v2_bodies,
    "pixel/track": v1_bodies("pixel_code", PIXEL, batch=False),
    "pixel/batch": v1_bodies("pixel_code", PIXEL, batch=True),
    "offline/track": v1_bodies("event_set_id", EVENT_SET, batch=False),
    "offline/batch": v1_bodies("event_set_id", EVENT_SET, batch=True),
}
requests = st.sampled_from(sorted(READERS)).flatmap(
    lambda name: st.tuples(
        st.sampled_from([f"/open_api/{v}/{name}/" for v in VERSIONS]),
        st.one_of(BODIES[name], json_values),  # mostly shaped for the path, sometimes not
    )
)


@pytest.fixture
def relay_url(serve_gateway: Callable[..., GatewayServer]) -> str:
    server = serve_gateway(
        pixels=[
            {"id": PIXEL, "access_token": TOKEN},
            {"id": EVENT_SET, "access_token": TOKEN, "event_source": "offline"},
        ]
    )
    return server.url


def check(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    answer: dict[str, Any] = orjson.loads(response.content)
    assert set(answer) == {"code", "message", "request_id", "data"}
    assert answer["code"] in CODES, answer
    assert isinstance(answer["message"], str) and answer["message"]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests)
def test_any_json_body_gets_the_envelope(relay_url: str, request: tuple[str, Any]) -> None:
    path, body = request
    response = httpx.post(relay_url + path, json=body, headers={"Access-Token": TOKEN})
    check(response)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    path=st.sampled_from(PATHS),
    raw=st.one_of(st.binary(max_size=64), st.text(max_size=64).map(str.encode)),
    content_type=st.sampled_from(["application/json", "text/plain", ""]),
)
def test_any_bytes_get_the_envelope(
    relay_url: str, path: str, raw: bytes, content_type: str
) -> None:
    headers = {"Access-Token": TOKEN, "Content-Type": content_type}
    check(httpx.post(relay_url + path, content=raw, headers=headers))
