"""What a rule asks of a postback before it fires: filters on fields and a price restriction.

Filters are those of lead systems' tracking rules — on publisher, channel, source, buyer,
campaign, pingtree or any other field: equals, one of, none of. Price restrictions are the
LMS's: greater than 0, greater than X, greater than or equal to X, lower than X, lower than
or equal to X, and an inclusive range [X, Y]. Each check answers None when it passes, or the
reason it failed, worded for the person reading the postback log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

_SHOWN = 64
_IDENTIFIERS = frozenset({"email", "phone", "external_id", "ip", "user_agent"})


class NotANumber(ValueError):
    """A field a rule compares as a price holds something else: the sender's fault (400)."""

    def __init__(self, field: str) -> None:
        self.field = field
        super().__init__(f"{field}: is not a number")


def shown(field: str, value: str | None) -> str:
    """A value as a reason may quote it: identifiers never, long values cut."""
    if value is None or value == "":
        return "absent"
    if field in _IDENTIFIERS:
        return "(hidden)"
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "…")


@dataclass(frozen=True, slots=True)
class Filter:
    """One field's condition: `equals` one value, is `one of`, or is `none of` some values."""

    field: str
    kind: str
    """"equals", "one_of" or "none_of"."""
    values: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {self.kind: self.values[0] if self.kind == "equals" else list(self.values)}

    def failure(self, fields: Mapping[str, str]) -> str | None:
        value = fields.get(self.field, "")
        if self.kind == "none_of":
            if value in self.values:
                return f"{self.field}: {shown(self.field, value)} is excluded (none of)"
            return None
        if value in self.values:
            return None
        if self.kind == "equals":
            return f"{self.field}: {shown(self.field, value)} is not {self.values[0]!r}"
        return f"{self.field}: {shown(self.field, value)} is not one of {list(self.values)}"


MAX_NUMBER_TEXT = 40
"""Characters of a postback's number, at most (the longest real amount has ~20)."""
MAX_EXPONENT = 30
"""Powers of ten a number may span either way: 1e-999999999 would format as a GB of zeros."""


def number(field: str, text: str) -> Decimal:
    """A postback's number: plain decimal text ("19.99", "-3", "1e2"), never "$5" or "5,00";
    its digits and exponent bounded, so formatting it costs nothing."""
    text = text.strip()
    if len(text) > MAX_NUMBER_TEXT:
        raise NotANumber(field)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise NotANumber(field) from None
    if not value.is_finite():
        raise NotANumber(field)
    if not value:
        return Decimal(0)  # 0e-999999999 is zero, and formats as one
    if not -MAX_EXPONENT <= value.adjusted() <= MAX_EXPONENT:
        raise NotANumber(field)
    return value


Compare = Callable[[Decimal, Decimal, Decimal], bool]
_OPERATORS: dict[str, tuple[str, Compare]] = {
    "gt": (">", lambda v, x, y: v > x),
    "gte": (">=", lambda v, x, y: v >= x),
    "lt": ("<", lambda v, x, y: v < x),
    "lte": ("<=", lambda v, x, y: v <= x),
    "between": ("in", lambda v, x, y: x <= v <= y),
}
OPERATORS = tuple(_OPERATORS)


@dataclass(frozen=True, slots=True)
class PriceRestriction:
    """`price > 0`, `> X`, `>= X`, `< X`, `<= X`, or within [X, Y] (bounds included)."""

    operator: str
    low: Decimal
    high: Decimal | None = None
    field: str = "price"

    def __post_init__(self) -> None:
        if self.operator not in _OPERATORS:
            raise ValueError(f"unknown price operator {self.operator!r}")
        if self.operator == "between" and (self.high is None or self.high < self.low):
            raise ValueError("a price range needs two bounds, the lower first")

    def describe(self) -> dict[str, Any]:
        if self.operator == "between":
            return {"between": [float(self.low), float(self.high or self.low)]}
        return {self.operator: float(self.low)}

    def __str__(self) -> str:
        if self.operator == "between":
            return f"{self.field} in [{self.low}, {self.high}]"
        return f"{self.field} {_OPERATORS[self.operator][0]} {self.low}"

    def failure(self, fields: Mapping[str, str]) -> str | None:
        """Why the price does not qualify; raises `NotANumber` for a price that is no number."""
        text = fields.get(self.field)
        if not text:
            return f"{self.field}: absent (the rule needs {self})"
        price = number(self.field, text)
        if _OPERATORS[self.operator][1](price, self.low, self.high or self.low):
            return None
        return f"{self.field}: {shown(self.field, text)} does not satisfy {self}"
