"""The served snippet: its size budget and the one event-name map it shares with the server."""

from __future__ import annotations

import json
import re

import pytest

from gateway.core.event_names import BUILTIN_MAP, EventNameMapper
from gateway.ingest.sources.beacon.snippet import SnippetEndpoint
from tests.conftest import SettingsFactory

BUDGET = 3 * 1024
"""Bytes on the wire (gzipped) with every feature in: the issue's limit."""


def snippet_names(body: bytes) -> dict[str, list[str]]:
    match = re.search(rb"NAMES = (\{.*?\});", body)
    assert match, "the name map is rendered into the snippet"
    names: dict[str, list[str]] = json.loads(match.group(1))
    return names


def resolve_like_the_snippet(names: dict[str, list[str]], name: str) -> tuple[str, ...]:
    """gw.js's `names(n) || [n]`: the exact name, else its lowercase form, else unchanged."""
    return tuple(names.get(name) or names.get(name.lower()) or [name])


def test_served_snippet_fits_the_size_budget(make_settings: SettingsFactory) -> None:
    snippet = SnippetEndpoint(make_settings())
    assert len(snippet.gzipped) < BUDGET, f"{len(snippet.gzipped)} bytes gzipped"
    assert b"\n//" not in snippet.body  # comment lines stay in the source


@pytest.mark.parametrize(
    "event_names",
    [{}, {"newsletter_signup": "Subscribe", "Purchase": ["Purchase", "CompletePayment"]}],
)
def test_snippet_and_server_map_every_name_alike(
    make_settings: SettingsFactory, event_names: dict[str, object]
) -> None:
    settings = make_settings(event_names=event_names)
    names = snippet_names(SnippetEndpoint(settings).body)
    assert BUILTIN_MAP.keys() <= names.keys()
    server = EventNameMapper(settings.event_names, strict=False)
    inputs = [*names, "Purchase", "PURCHASE", "Add_To_Cart", "CompletePayment", "my_event"]
    for name in inputs:
        assert resolve_like_the_snippet(names, name) == server.map(name), name
