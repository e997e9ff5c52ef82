"""Property tests: whatever JSON arrives, the parser answers with events it can store or an
EventError naming a field — never another exception (which would be a 500 at the edge)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.errors import EventError
from gateway.ingest.parser import ParseRules, parse_event
from gateway.ingest.policy import BROWSER, SERVER, SourcePolicy
from gateway.settings import parse_settings

SETTINGS = parse_settings(
    {"pixels": [{"id": "CFUZZPIXEL01", "access_token": "t", "origins": ["https://s.example"]}]},
    {},
)
RULES = ParseRules.from_settings(SETTINGS)
NOW = time.time()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["", " ", "19.99", "$5", "1e309", "9" * 50, "2024-11-22T18:10:00Z", "NaN"]),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
user_keys = st.sampled_from(
    ["email", "phone", "external_id", "sha256_email", "first_name", "zip_code", "city", "ip",
     "ttclid", "ttp", "user_agent", "locale", "att_status", "nonsense"]
)  # fmt: skip
property_keys = st.sampled_from(
    ["value", "currency", "contents", "content_ids", "num_items", "content_type", "order_id",
     "email", "custom"]
)  # fmt: skip
events = st.fixed_dictionaries(
    {"event": st.one_of(st.sampled_from(["Purchase", "purchase", "x"]), json_values)},
    optional={
        "event_id": json_values,
        "event_time": st.one_of(json_values, st.integers(0, 2 * 10**12)),
        "user": st.one_of(json_values, st.dictionaries(user_keys, json_values, max_size=5)),
        "properties": st.one_of(
            json_values, st.dictionaries(property_keys, json_values, max_size=5)
        ),
        "page": st.one_of(
            json_values, st.fixed_dictionaries({"url": st.just("https://s.example/p")})
        ),
        "limited_data_use": json_values,
        "lead": json_values,
        "test_event_code": json_values,
    },
)


def check(raw: Any, *, policy: SourcePolicy) -> None:
    try:
        parsed = parse_event(raw, pixel=SETTINGS.pixels[0], rules=RULES, now=NOW, policy=policy)
    except EventError as exc:
        assert exc.field and exc.message
        return
    for event in parsed.events:
        orjson.dumps(event.to_record())  # storable: the outbox can hold it
        assert isinstance(event.event_id, str) and isinstance(event.event_time, int)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_structured_hostile_events(raw: dict[str, Any]) -> None:
    check(raw, policy=SERVER)
    check(raw, policy=BROWSER)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_value(raw: Any) -> None:
    check(raw, policy=BROWSER)
