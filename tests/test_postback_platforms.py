"""Other lead platforms' postbacks, shaped as each fills its macros (issue 22)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PIXEL, TOKEN, run_cli

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
