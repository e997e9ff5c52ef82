"""Secrets: values whose repr never shows them, read from the environment or a file.

A config file may say `env:NAME` or `file:/path` instead of holding a token itself, so the
file can be committed or mounted without leaking anything.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus


@dataclass(frozen=True)
class Secret:
    """A secret value whose repr and str never reveal it; call `reveal()` at the point of use."""

    _value: str = field(repr=False)
    source: str = "inline"

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return f"<secret from {self.source}>"


REDACTED = "[REDACTED]"
_ECHO = 10
"""A run of this many characters of a long secret, anywhere in a text, is an echo of it."""


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret (4 characters or more) replaced, in any case and
    percent-encoded, and with every echo of part of a secret of 16 characters or more (a
    prefix, all but its last character) replaced too: an upstream that quotes a token back
    partly must not put the rest of it in a log, a dead letter or a page."""
    exact, echoes = _redaction(tuple(secrets))
    if exact is not None:
        text = exact.sub(REDACTED, text)
    return _without_echoes(text, echoes) if echoes else text


@functools.lru_cache(maxsize=64)
def _redaction(secrets: tuple[str, ...]) -> tuple[re.Pattern[str] | None, frozenset[str]]:
    """One pattern for every secret's written forms; the lower-cased runs of long ones."""
    forms = {
        form
        for secret in secrets
        if len(secret) >= 4
        for form in (secret, quote(secret, safe=""), quote_plus(secret))
    }
    ordered = sorted(forms, key=len, reverse=True)  # the longest form first
    exact = re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE) if ordered else None
    echoes = frozenset(
        secret.lower()[start : start + _ECHO]
        for secret in secrets
        if len(secret) >= 16
        for start in range(len(secret) - _ECHO + 1)
    )
    return exact, echoes


def _without_echoes(text: str, echoes: frozenset[str]) -> str:
    lowered = text.lower()
    covered = [False] * len(text)
    for start in range(len(text) - _ECHO + 1):
        if lowered[start : start + _ECHO] in echoes:
            covered[start : start + _ECHO] = [True] * _ECHO
    if not any(covered):
        return text
    parts: list[str] = []
    for index, char in enumerate(text):
        if not covered[index]:
            parts.append(char)
        elif index == 0 or not covered[index - 1]:
            parts.append(REDACTED)
    return "".join(parts)


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
