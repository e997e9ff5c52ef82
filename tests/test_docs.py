"""The configuration reference of the docs site is generated from the settings declarations:
every declared field is on it, with its environment variable and default, and no note of the
generator names a field that does not exist."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gateway.settings import load
from gateway.settings.model import PixelConfig, Settings

ROOT = Path(__file__).parent.parent
HOOK = ROOT / "docs" / "hooks" / "config_reference.py"


@pytest.fixture(scope="module")
def hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_reference", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def page(hook: ModuleType) -> str:
    text = (ROOT / "docs" / "configuration.md").read_text()
    out: str = hook.on_page_markdown(text, page=None, config=None, files=None)
    return out


def declared() -> list[str]:
    """Every field a configuration file may set, walked here independently of the hook."""
    paths = []
    hints = typing.get_type_hints(Settings)
    for field in dataclasses.fields(Settings):
        hint: Any = hints[field.name]
        if field.name == "pixels":
            paths += [f"pixels.{f.name}" for f in dataclasses.fields(PixelConfig)]
        elif dataclasses.is_dataclass(hint):
            paths += [f"{field.name}.{f.name}" for f in dataclasses.fields(hint) if f.init]
        else:
            paths.append(field.name)
    return paths


def row(page: str, path: str) -> str:
    [line] = [line for line in page.splitlines() if f'<span id="{path}"></span>' in line]
    return line


def test_every_declared_field_is_on_the_page(page: str) -> None:
    paths = declared()
    assert len(paths) > 90
    missing = [path for path in paths if f'<span id="{path}"></span>' not in page]
    assert missing == []
    assert "<!--" not in page  # every marker was filled


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("outbox.url", ["`GATEWAY_OUTBOX_URL`", '`"sqlite:///tiktok-gateway-outbox.sqlite3"`']),
        ("metrics.port", ["`9464`", "0 … 65_535"]),
        ("metrics.host", ["`GATEWAY_METRICS_HOST`", '`"127.0.0.1"`']),
        ("server_api.api_keys", ["`GATEWAY_API_KEY` (added)", "each 16+ characters"]),
        ("cookies.secrets", ["`GATEWAY_COOKIE_SECRET` (first)"]),
        ("rate_limit.ipv6_prefix", ["`64`", "32 … 128", "/64"]),
        ("rate_limit.max_clients", ["`100_000`", "bounded"]),
        ("cookies.signed_name", ['`"_ttgw"`', "HttpOnly"]),
        ("outbox.sqlite_synchronous", ['`"FULL"`', "`FULL`, `EXTRA`, `NORMAL`"]),
        ("pixels.event_source", ["`web`, `app`, `offline`, `crm`"]),
        ("log_format", ["`GATEWAY_LOG_FORMAT`", '`"auto"`']),
    ],
)
def test_a_row_shows_its_default_bounds_and_environment_variable(
    page: str, path: str, shown: list[str]
) -> None:
    line = row(page, path)
    for text in shown:
        assert text in line


def test_every_field_has_a_description(hook: ModuleType) -> None:
    for section in hook.sections():
        for entry in section.rows:
            assert entry.description, entry.path


def test_every_note_names_a_declared_field(hook: ModuleType) -> None:
    paths = set(declared()) | {field.name for field in dataclasses.fields(Settings)}
    assert set(hook.NOTES) - paths == set()


def test_the_quick_start_variables_are_the_ones_the_loader_reads(hook: ModuleType) -> None:
    source = inspect.getsource(load)
    for name in hook.QUICK_START_ENV:
        assert f'"{name}"' in source, name


def test_descriptions_cite_no_module_path(page: str) -> None:
    assert re.search(r"\b[\w/]+\.py\b", page) is None
