"""Every source has one shape (`ingest/source.py`) and is listed once (`app.SOURCES`): a
folder under `ingest/sources/` that is not listed, or not kept apart from the others by
the linter's independence contract, fails here."""

from __future__ import annotations

import importlib
import pkgutil
import tomllib
from pathlib import Path

from gateway import app
from gateway.ingest import sources
from gateway.ingest.policy import SourcePolicy

ROOT = Path(__file__).resolve().parent.parent


def test_every_source_is_listed_once_with_its_name_and_policy() -> None:
    found = [
        importlib.import_module(f"{sources.__name__}.{module.name}")
        for module in pkgutil.iter_modules(sources.__path__)
    ]
    assert found, "no sources found"
    assert sorted(id(module.SOURCE) for module in found) == sorted(map(id, app.SOURCES))
    names = [source.name for source in app.SOURCES]
    assert len(set(names)) == len(names)
    assert all(isinstance(source.policy, SourcePolicy) for source in app.SOURCES)


def test_the_linter_keeps_every_source_apart() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    [independence] = [
        c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "independence"
    ]
    listed = {m.name for m in pkgutil.iter_modules(sources.__path__)}
    assert set(independence["modules"]) == {f"{sources.__name__}.{name}" for name in listed}
