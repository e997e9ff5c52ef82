"""The postback configurations of docs/lead-systems.md are valid, and print the URLs it shows."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from gateway.settings import parse_settings
from tests.conftest import run_cli

PAGE = Path(__file__).parent.parent / "docs" / "lead-systems.md"
ENV = {
    "TIKTOK_PIXEL_ID": "C4ABCDEF1234567890",
    "TIKTOK_ACCESS_TOKEN": "token",
    "LMS_POSTBACK_SECRET": "lms-secret-0123456789",
    "PINGTREE_POSTBACK_SECRET": "tree-secret-0123456789",
    "GATEWAY_CONTEXT_SECRET": "context-secret-0123456789",
    "VOLUUM_POSTBACK_SECRET": "voluum-secret-0123456789",
    "CAKE_POSTBACK_SECRET": "cake-secret-0123456789",
    "LEADS_POSTBACK_SECRET": "leads-secret-0123456789",
    "EVERFLOW_WEBHOOK_SECRET": "everflow-secret-0123456789",
}


def section() -> str:
    return PAGE.read_text()


def blocks() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", section(), re.DOTALL)


def test_every_configuration_of_the_section_is_valid() -> None:
    found = blocks()
    assert len(found) == 5  # rules, the LMS, the pingtree, other platforms, the table
    for block in found:
        data = tomllib.loads(block)
        data.pop("pixels", None)
        rules = data.get("postbacks", {}).get("rules", [])
        for rule in rules:
            rule.pop("pixel", None)  # the page's pixel is the one of ENV here
        parse_settings(data, ENV)


def test_the_lms_url_is_the_one_the_page_shows(tmp_path: Path) -> None:
    config = tmp_path / "lms.toml"
    config.write_text(blocks()[1])
    result = run_cli(
        "postback-url", "lms", "--base", "https://t.shop.example", "--config", str(config), env=ENV
    )
    assert result.returncode == 0, result.stderr
    shown = result.stdout.strip().replace("lms-secret-0123456789", "…")
    assert shown in section()
