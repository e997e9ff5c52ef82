"""The wheel ships every package folder and the snippet (pyproject lists packages by hand)."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "gateway").rglob("__init__.py")
    }
    assert found | {"gateway.static"} == listed


def test_the_snippet_source_ships_as_gateway_static() -> None:
    shipped = resources.files("gateway.static").joinpath("gw.js").read_text(encoding="utf-8")
    assert shipped == (ROOT / "static" / "gw.js").read_text(encoding="utf-8")
