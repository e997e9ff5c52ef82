"""A CLI a stranger can use: every command and option explained, send-test's answers plain
(issue 23.6)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator

from gateway.cli.main import parser
from gateway.fake_api import FakeEventsApi
from tests.conftest import PIXEL, TOKEN, free_port, run_cli


def _parsers(
    command: argparse.ArgumentParser, name: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, command
    for action in command._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_command_has_a_description_and_every_option_a_help_text() -> None:
    found = dict(_parsers(parser(), "tiktok-gateway"))
    assert {"tiktok-gateway send-test", "tiktok-gateway outbox backup"} <= set(found)
    assert len(found) >= 14
    missing = []
    for name, command in found.items():
        if not (command.description or "").strip():
            missing.append(f"{name}: no description")
        for action in command._actions:
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing
    for name in ("send-test", "check-config", "replay"):
        options = {o for a in found[f"tiktok-gateway {name}"]._actions for o in a.option_strings}
        assert "--json" in options, name
    for name in ("replay", "purge-dead"):
        options = {o for a in found[f"tiktok-gateway {name}"]._actions for o in a.option_strings}
        assert "--dry-run" in options, name


def test_a_subcommands_help_starts_with_what_it_does() -> None:
    result = run_cli("purge-dead", "--help")
    assert result.returncode == 0
    assert "\n\nDelete old dead letters.\n" in result.stdout
    assert "delete dead letters that died more than DAYS days ago" in result.stdout


def _env(api: str) -> dict[str, str]:
    return {"TIKTOK_PIXEL_ID": PIXEL, "TIKTOK_ACCESS_TOKEN": TOKEN, "TIKTOK_API_BASE": api}


def test_send_test_refuses_an_email_that_is_no_email(fake_api: FakeEventsApi) -> None:
    result = run_cli(
        "send-test", "--event", "Lead", "--email", "notanemail", env=_env(fake_api.url)
    )
    assert result.returncode == 2
    assert "argument --email: is not an email address" in result.stderr
    assert "notanemail" not in result.stderr and "Traceback" not in result.stderr
    assert not fake_api.requests


def test_send_test_names_the_url_it_could_not_reach() -> None:
    base = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = run_cli(
        "send-test", "--event", "Lead", "--url", "https://shop.example/", env=_env(base)
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"could not reach the Events API at {base}/open_api/v1.3/event/track/")
    assert "TIKTOK_API_BASE" in last and "Traceback" not in result.stderr


def test_send_test_prints_json_alone_with_json(fake_api: FakeEventsApi) -> None:
    result = run_cli(
        "send-test", "--event", "Purchase", "--email", "alice@example.com", "--json",
        "--url", "https://shop.example/", env=_env(fake_api.url),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["delivered"] is True and report["answer"]["code"] == 0
    assert report["body"] == fake_api.requests[-1].body
    assert report["match_key_score"]["keys"][0] == "email"
    assert "alice@example.com" not in result.stdout and TOKEN not in result.stdout
