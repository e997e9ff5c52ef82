"""The bot filter against published lists, not strings we typed: crawlers and real browsers."""

from __future__ import annotations

import json
from importlib import resources

from gateway.ingest.sources.beacon.enrich import is_bot


def _crawlers() -> list[str]:
    """Every sample user agent of the crawler-user-agents list (a package on PyPI)."""
    text = resources.files("crawleruseragents").joinpath("crawler-user-agents.json").read_text()
    return [ua for entry in json.loads(text) for ua in entry.get("instances", [])]


def _browsers() -> list[str]:
    """Real browsers' user agents, as fake-useragent ships them (collected from traffic)."""
    lines = resources.files("fake_useragent").joinpath("data/browsers.jsonl").read_text()
    return [json.loads(line)["useragent"] for line in lines.splitlines() if line.strip()]


def test_at_least_99_percent_of_a_published_crawler_list_is_dropped() -> None:
    crawlers = _crawlers()
    assert len(crawlers) > 1500
    missed = [ua for ua in crawlers if not is_bot(ua)]
    assert len(missed) <= len(crawlers) // 100, missed[:10]


def test_at_most_a_thousandth_of_real_browsers_is_dropped() -> None:
    browsers = _browsers()
    assert len(browsers) > 1000
    dropped = [ua for ua in browsers if is_bot(ua)]
    assert len(dropped) <= len(browsers) // 1000, dropped[:10]
