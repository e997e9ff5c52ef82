"""Release files agree with pyproject.toml: the licence it declares is the one shipped, the lock
the image installs from satisfies every runtime dependency, the changelog has its sections."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _locked() -> dict[str, tuple[str, int]]:
    """name → (pinned version, number of hashes) from requirements.lock."""
    text = (ROOT / "requirements.lock").read_text().replace("\\\n", " ")
    pins: dict[str, tuple[str, int]] = {}
    for line in text.splitlines():
        match = re.match(r"([A-Za-z0-9._-]+)==(\S+)", line)
        if match:
            pins[canonicalize_name(match[1])] = (match[2], line.count("--hash=sha256:"))
    return pins


def test_the_licence_file_is_the_one_pyproject_declares() -> None:
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the whole text, not a notice


def test_the_lock_pins_every_runtime_dependency_within_its_range_with_hashes() -> None:
    locked = _locked()
    linux = {**{k: str(v) for k, v in default_environment().items()}, "sys_platform": "linux"}
    for line in PROJECT["dependencies"]:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate(linux):
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements.lock: run pip-compile again"
        pinned, hashes = locked[name]
        assert requirement.specifier.contains(pinned, prereleases=True), (
            f"requirements.lock pins {name}=={pinned}, outside {requirement.specifier}"
        )
        assert hashes >= 1, f"{name} has no hash in requirements.lock"
    assert all(hashes for _, hashes in locked.values())


def test_the_image_installs_the_lock_with_hashes_before_the_package_alone() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    locked = re.search(r"install [^\n]*--require-hashes[^\n]*-r requirements\.lock", dockerfile)
    package = re.search(r"install [^\n]*--no-deps \.", dockerfile)
    assert locked and package and locked.start() < package.start()
    assert "COPY requirements.lock" in dockerfile


def test_uvicorn_has_an_upper_bound() -> None:
    [uvicorn] = [Requirement(d) for d in PROJECT["dependencies"] if d.startswith("uvicorn")]
    assert any(spec.operator == "<" for spec in uvicorn.specifier), uvicorn


def test_the_changelog_keeps_an_unreleased_section() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "[Keep a Changelog](https://keepachangelog.com/" in text
    sections = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    assert sections and sections[0] == "Unreleased"
    assert re.search(r"^### (Added|Changed|Fixed|Removed|Deprecated|Security)$", text, re.M)
