"""Other lead platforms' postbacks, shaped as each fills its macros (issue 22)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from gateway.fake_api import FakeEventsApi
from tests.conftest import PIXEL, TOKEN, GatewayServer, run_cli, wait_for_events
from tests.test_postbacks import CLICK, LMS_KEY, Lead, lead

__all__ = ["lead"]  # the fixture, shared with the LMS tests

EVERFLOW = f"""
api_base = "http://127.0.0.1:9"

[[pixels]]
id = "{PIXEL}"
access_token = "{TOKEN}"

[postbacks.sources.everflow]
secret = "everflow-secret-0123456789"
triggers = {{ event = {{ "Purchase" = "efw_purchase" }}, \
is_event = {{ "false" = "efw_conversion", "true" = "efw_event" }} }}

[[postbacks.rules]]
name = "purchase"
trigger = "efw_purchase"
event = "Purchase"
fields = {{ event_id = "{{transaction_id}}", page_url = "https://shop.example/" }}

[[postbacks.rules]]
name = "conversion"
trigger = ["efw_conversion", "efw_event"]
event = "Contact"
fields = {{ event_id = "{{transaction_id}}-ev", page_url = "https://shop.example/" }}
"""


@pytest.fixture
def everflow(tmp_path: Path) -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(EVERFLOW.replace(" \\\n", " "))
    return config


def test_the_trigger_map_written_first_wins_in_every_process(everflow: Path) -> None:
    """Two maps match: the order of the file decides, whatever the hash seed, so a platform's
    retry on another replica or after a restart is the same event with the same id."""
    query = "event=Purchase&is_event=false&transaction_id=5530"
    seen = set()
    for seed in range(8):
        result = run_cli(
            "postback-test", "everflow", query, "--config", str(everflow),
            env={"PYTHONHASHSEED": str(seed)},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        seen.add(result.stdout.splitlines()[0])
    assert seen == {"matched  purchase: Purchase (event_id 5530)"}


WEBHOOK_KEY = "everflow-webhook-secret-0123"
WEBHOOK = {
    "sources": {
        "everflow": {
            "secret": WEBHOOK_KEY,
            "rename": {"payout": "price", "relationship.offer.name": "offer"},
            "triggers": {"is_event": {"false": "conversion"}},
            "fields": ["relationship.offer.network_offer_id", "offer"],
        }
    },
    "rules": [
        {
            "name": "sale",
            "trigger": "conversion",
            "filters": {"offer": "Loans A", "relationship.affiliate.network_affiliate_id": "7"},
            "event": "Purchase",
            "fields": {
                "event_id": "{transaction_id}",
                "value": "{price}",
                "currency": "USD",
                "page_url": "https://shop.example/",
                "contents": {"content_id": "{relationship.offer.network_offer_id}"},
            },
        }
    ],
}
CONVERSION = {  # an Everflow conversion webhook, cut down: relationship objects nest
    "conversion_id": "c0ffee",
    "transaction_id": "5530",
    "is_event": False,
    "payout": 40,
    "sub1": "",
    "relationship": {
        "offer": {"network_offer_id": 12, "name": "Loans A", "tags": ["a", {"deep": True}]},
        "advertiser": {"network_advertiser_id": 3, "name": "Lender"},
        "affiliate": {"network_affiliate_id": 7, "name": "Pub"},
        "events_count": None,
    },
}


def test_a_json_webhook_with_nested_objects_fires_on_its_dotted_fields(
    serve_gateway: Callable[..., GatewayServer], fake_api: FakeEventsApi
) -> None:
    """Everflow's webhook nests offer, advertiser and affiliate: their fields are usable by
    dotted name, the rest ignored, and the conversion is never refused for them."""
    server = serve_gateway(postbacks=WEBHOOK)
    answer = httpx.post(
        f"{server.url}/v1/postbacks/everflow", params={"key": WEBHOOK_KEY}, json=CONVERSION
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["fired"][0]["events"][0]["event_id"] == "5530"
    [event] = wait_for_events(fake_api, 1)
    assert event["properties"]["contents"][0]["content_id"] == "12"
    assert event["properties"]["value"] == 40


def test_unfilled_macros_count_as_absent_and_never_displace_the_browsers_click(
    lead: Lead,
) -> None:
    """Voluum's `{externalid}`, Keitaro's `%7Bsubacc4%7D`, CAKE's `#s2##s3#`: what the
    platform did not fill is no click id; nor is a value TikTok would refuse."""
    for number, (ttclid, flag) in enumerate(
        [("{externalid}", "context"), ("%7Bsubacc4%7D", "context"),
         ("#s2##s3#", "context"), ("not a click!", "malformed")]
    ):  # fmt: skip
        lead_id = f"L-macro-{number}"
        lead.browse(lead_id)
        answer = lead.http.get(
            f"/v1/postbacks/lms?key={LMS_KEY}&trigger=lead_sold&lead_id={lead_id}"
            f"&payout=5&ttclid={ttclid.replace(' ', '%20').replace('#', '%23')}"
        )
        assert answer.json()["ttclid"] == flag, answer.text
        assert lead.delivered_event(f"{lead_id}-lead_sold")["user"]["ttclid"] == CLICK
    metrics = httpx.get(lead.server.metrics_url).text
    assert 'tiktok_gateway_postback_unfilled_macros_total{source="lms"} 3.0' in metrics
