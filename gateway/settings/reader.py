"""Typed reading of TOML tables that records problems instead of raising.

Validation collects every fault before failing, so `check-config` can report them all at
once, each named by its dotted path; keys nobody read are reported as unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class TableReader:
    """Reads typed keys from one TOML table, recording problems instead of raising."""

    def __init__(
        self,
        data: Mapping[str, Any],
        path: str,
        problems: list[str],
        *,
        secrets_needed: bool = True,
    ) -> None:
        """`secrets_needed=False`: a secret whose variable or file is missing is no problem
        (commands that use no token or password); every table read from this one inherits it."""
        self._data = data
        self._path = path
        self._problems = problems
        self._seen: set[str] = set()
        self.secrets_needed = secrets_needed

    def name(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def problem(self, key: str, message: str) -> None:
        self._problems.append(f"{self.name(key)}: {message}")

    def _get(self, key: str, kind: type | tuple[type, ...], kind_name: str) -> Any:
        self._seen.add(key)
        if key not in self._data:
            return None
        value = self._data[key]
        if isinstance(value, bool) and kind is not bool:
            self.problem(key, f"must be {kind_name}, got a boolean")
            return None
        if not isinstance(value, kind):
            self.problem(key, f"must be {kind_name}, got {type(value).__name__} {value!r}")
            return None
        return value

    def string(self, key: str, default: str | None = None) -> str | None:
        value = self._get(key, str, "a string")
        return default if value is None else value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self._get(key, int, "an integer")
        if value is None:
            return default
        if not low <= value <= high:
            self.problem(key, f"must be between {low} and {high}, got {value}")
            return default
        return int(value)

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self._get(key, (int, float), "a number")
        if value is None:
            return default
        if not low <= value <= high:
            self.problem(key, f"must be between {low} and {high}, got {value}")
            return default
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, bool, "true or false")
        return default if value is None else bool(value)

    def strings(self, key: str) -> list[str]:
        value = self._get(key, list, "a list of strings")
        if value is None:
            return []
        if not all(isinstance(item, str) for item in value):
            self.problem(key, "must be a list of strings")
            return []
        return list(value)

    def table(self, key: str) -> TableReader:
        value = self._get(key, dict, "a table")
        return TableReader(
            value or {}, self.name(key), self._problems, secrets_needed=self.secrets_needed
        )

    def tables(self, key: str) -> list[TableReader]:
        value = self._get(key, list, "an array of tables ([[...]])")
        if value is None:
            return []
        tables = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                self.problem(f"{key}[{index}]", "must be a table")
                continue
            name = f"{self.name(key)}[{index}]"
            tables.append(
                TableReader(item, name, self._problems, secrets_needed=self.secrets_needed)
            )
        return tables

    def value(self, key: str) -> Any:
        """A key's raw value, marked read (for values of several shapes)."""
        self._seen.add(key)
        return self._data.get(key)

    def peek(self, key: str) -> Any:
        """A key's raw value without marking it read (to pick how to read it)."""
        return self._data.get(key)

    def raw_keys(self) -> list[str]:
        """The keys present, in the order written, without marking them read."""
        return list(self._data)

    def raw(self) -> Mapping[str, Any]:
        self._seen.update(self._data)
        return self._data

    def finish(self) -> None:
        for key in self._data:
            if key not in self._seen:
                self.problem(key, "unknown key")
