"""The match-key score: documented weights, 0 to 10, IP and user agent only as a pair."""

from __future__ import annotations

import dataclasses

from gateway.core.score import MAX_SCORE, WEIGHTS, keys_present, score

DIGEST = "a" * 64


def test_weights_add_up_to_ten_and_every_key_scores() -> None:
    assert MAX_SCORE == 10
    assert dict(WEIGHTS) == {
        "ttclid": 3,
        "email": 2,
        "phone": 2,
        "external_id": 1,
        "ttp": 1,
        "ip_user_agent": 1,
    }
    full = {
        "ttclid": "E.C.P.x",
        "email": [DIGEST],
        "phone": [DIGEST],
        "external_id": [DIGEST],
        "ttp": "t",
        "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0",
    }
    assert score(full) == 10
    assert keys_present(full) == [key for key, _ in WEIGHTS]
    assert score({}) == 0 and keys_present({}) == []


def test_the_score_is_the_sum_of_the_weights_of_the_keys_present() -> None:
    weights, values = dict(WEIGHTS), {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0"}
    names = ["ttclid", "email", "phone", "external_id", "ttp", "ip", "user_agent"]
    for mask in range(1 << len(names)):
        user = {n: values.get(n, [DIGEST]) for i, n in enumerate(names) if mask >> i & 1}
        assert score(user) == sum(weights[key] for key in keys_present(user)), user


def test_ip_without_user_agent_does_not_count() -> None:
    assert score({"ip": "203.0.113.9"}) == 0
    assert score({"ip": "203.0.113.9", "user_agent": "Mozilla/5.0"}) == 1
    assert score({"email": [], "ttclid": "E.C.P.x"}) == 3


def test_the_histogram_counts_each_score_per_pixel_and_event() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from gateway.ingest.policy import SERVER
    from gateway.telemetry.score_histogram import ScoreHistogram
    from tests.conftest import PIXEL, make_event

    registry = CollectorRegistry()
    histogram = ScoreHistogram(registry, max_series=1)
    bare = dataclasses.replace(make_event(2), event="Lead", user={})
    histogram.accepted([make_event(1), bare], SERVER)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }

    def value(name: str, event: str, le: str | None = None) -> float:
        labels = {"pixel": PIXEL, "event": event, **({"le": le} if le else {})}
        return samples[(f"tiktok_gateway_match_key_score_{name}", tuple(sorted(labels.items())))]

    assert value("bucket", "Purchase", "1.0") == 0  # the email alone: 2
    assert value("bucket", "Purchase", "2.0") == 1
    assert value("sum", "Purchase") == 2
    assert value("bucket", "other", "0.0") == 1  # past max_series, a new name is "other"
