"""Field templates of a rule's action: constants with `{placeholders}` for postback fields.

    event_id = "{lead_id}-{trigger}"      value = "{price}"      currency = "USD"

Parsed once, at configuration time: an unknown placeholder is a configuration error and
rendering is a join, in one pass (a value holding `{` is never expanded again; `{{` and `}}`
are literal braces). A placeholder the postback did not carry makes the whole template
absent: half an `event_id` would break TikTok's deduplication.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


class TemplateError(ValueError):
    """A template that cannot be parsed; the message says why."""


@dataclass(frozen=True, slots=True)
class Template:
    """Literal text and placeholders, alternating: parts[0] {fields[0]} parts[1] …"""

    parts: tuple[str, ...]
    fields: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        parts: list[str] = []
        fields: list[str] = []
        literal: list[str] = []
        position = 0
        for match in _TOKEN.finditer(text):
            literal.append(text[position : match.start()])
            position = match.end()
            token = match.group(0)
            if token in ("{{", "}}"):
                literal.append(token[0])
            elif token in ("{", "}"):
                raise TemplateError(f"unbalanced {token!r} (write {token * 2} for a literal one)")
            else:
                name = match.group(1).strip()
                if not _NAME.fullmatch(name):
                    raise TemplateError(f"{{{match.group(1)}}} is not a field name")
                parts.append("".join(literal))
                literal = []
                fields.append(name)
        literal.append(text[position:])
        parts.append("".join(literal))
        return cls(tuple(parts), tuple(fields))

    @property
    def constant(self) -> str | None:
        """The text when the template has no placeholder."""
        return None if self.fields else self.parts[0]

    def render(self, values: Mapping[str, str]) -> str | None:
        """The text with every placeholder filled; None when a field is absent or blank."""
        if not self.fields:
            return self.parts[0]
        out = [self.parts[0]]
        for name, literal in zip(self.fields, self.parts[1:], strict=True):
            value = values.get(name)
            if not value:
                return None
            out.append(value)
            out.append(literal)
        return "".join(out)

    def missing(self, values: Mapping[str, str]) -> str | None:
        """The first placeholder the values leave empty (for a reason to show)."""
        return next((name for name in self.fields if not values.get(name)), None)

    def __str__(self) -> str:
        out = [self.parts[0].replace("{", "{{").replace("}", "}}")]
        for name, literal in zip(self.fields, self.parts[1:], strict=True):
            out.append(f"{{{name}}}")
            out.append(literal.replace("{", "{{").replace("}", "}}"))
        return "".join(out)
