"""Secrets: values whose repr never shows them, read from the environment or a file.

A config file may say `env:NAME` or `file:/path` instead of holding a token itself, so the
file can be committed or mounted without leaking anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Secret:
    """A secret value whose repr and str never reveal it; call `reveal()` at the point of use."""

    _value: str = field(repr=False)
    source: str = "inline"

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return f"<secret from {self.source}>"


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret (4 characters or more, longest first) replaced."""
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    return text


def resolve_secret(
    ref: str, where: str, env: Mapping[str, str], problems: list[str], *, needed: bool = True
) -> Secret:
    """The secret `ref` names; a missing variable or file is a problem only when `needed`
    (then an empty secret stands for it)."""
    if not needed:
        problems = []
    if ref.startswith("env:"):
        name = ref[4:]
        value = env.get(name, "").strip()
        if not value:
            problems.append(f"{where}: environment variable {name} is not set or empty")
        return Secret(value, source=ref)
    if ref.startswith("file:"):
        path = Path(ref[5:])
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(f"{where}: cannot read {path}: {exc.strerror}")
            return Secret("", source=ref)
        if not value:
            problems.append(f"{where}: {path} is empty")
        return Secret(value, source=ref)
    return Secret(ref.strip(), source="inline")
