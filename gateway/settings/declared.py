"""Settings declared once: a dataclass field says its default, bounds, environment variable
and conversion, and one generic reader, one redactor and one secret collector follow from it.

Adding a setting is then one line in its section's dataclass. A field typed `Secret` (or a
tuple of them) is a secret wherever it appears: `redacted()` shows its source, never its
value, and `secret_values()` hands it to the log filter. A URL that may carry a password
is marked with `secret_url=True`.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from gateway.core.secret import Secret, resolve_secret
from gateway.settings.reader import TableReader

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")
Convert = Callable[[Any], Any]
"""Turns a TOML value into the setting's value, or raises ValueError with the reason."""


def setting(
    default: Any = dataclasses.MISSING,
    *,
    low: float | None = None,
    high: float | None = None,
    env: str | None = None,
    env_first: bool = False,
    convert: Convert | None = None,
    each: Convert | None = None,
    min_length: int | None = None,
    secret_url: bool = False,
    read: Callable[[TableReader, str, Mapping[str, str], list[str]], Any] | None = None,
    default_factory: Callable[[], Any] | None = None,
    moved_to: str | None = None,
) -> Any:
    """A dataclass field with how to read it from TOML (see `read_section`).

    `moved_to`: a key that moved to that section under the same name; still read here (None
    when absent), then moved by `move_deprecated`, never shown nor compared here."""
    metadata = {
        "low": low,
        "high": high,
        "env": env,
        "env_first": env_first,
        "convert": convert,
        "each": each,
        "min_length": min_length,
        "secret_url": secret_url,
        "read": read,
        "moved_to": moved_to,
    }
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata, compare=moved_to is None)


def choice(*options: str, normalise: Callable[[str], str] = str.upper) -> Convert:
    """A string that must be one of `options` once normalised (case, say)."""

    def convert(value: str) -> str:
        normal = normalise(value.strip())
        if normal not in options:
            raise ValueError(f"must be {_one_of(options)}")
        return normal

    return convert


def _one_of(options: tuple[str, ...]) -> str:
    return ", ".join(options[:-1]) + f" or {options[-1]}" if len(options) > 1 else options[0]


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise TypeError(f"setting {field.name} has no default")


def read_section(
    cls: type[T], table: TableReader, env: Mapping[str, str], problems: list[str]
) -> T:
    """Read a section dataclass from its TOML table; every problem is recorded, none raised.

    A value that cannot be used is reported and replaced by the default, so one run of
    `check-config` names every fault. Cross-field rules live in the section's `problems()`.
    """
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.init:
            values[field.name] = _read_field(field, hints[field.name], table, env, problems)
    table.finish()
    section = cls(**values)
    check = getattr(section, "problems", None)
    if check is not None:
        for key, message in check():
            table.problem(key, message)
    return section


def _read_field(
    field: dataclasses.Field[Any],
    hint: Any,
    table: TableReader,
    env: Mapping[str, str],
    problems: list[str],
) -> Any:
    meta, key, default = field.metadata, field.name, _default(field)
    if meta.get("read") is not None:
        return meta["read"](table, key, env, problems)
    if meta.get("moved_to") is not None:
        if key not in table.raw_keys():
            return None
        hint = next(h for h in typing.get_args(hint) if h is not type(None))
    if hint is Secret:
        ref = table.string(key)
        if not ref:
            return Secret("", source="missing")
        return resolve_secret(ref, table.name(key), env, problems, needed=table.secrets_needed)
    if dataclasses.is_dataclass(hint):
        return read_section(typing.cast(type[Any], hint), table.table(key), env, problems)
    if typing.get_origin(hint) is tuple:
        return _read_tuple(field, typing.get_args(hint)[0], table, env, problems)
    value: Any
    if hint is bool:
        return table.boolean(key, default)
    if hint is int:
        value = table.integer(key, default, int(meta["low"]), int(meta["high"]))
    elif hint is float:
        value = table.number(key, default, meta["low"], meta["high"])
    else:  # a string, or an optional one
        from_env = env.get(meta["env"], "").strip() if meta.get("env") else ""
        in_file = table.string(key)  # read even when the environment wins: a known key
        value = from_env or in_file
        if value is None:
            return default
    return _converted(meta.get("convert"), value, default, table, key)


def _converted(
    convert: Convert | None, value: Any, default: Any, table: TableReader, key: str
) -> Any:
    if convert is None:
        return value
    try:
        return convert(value)
    except ValueError as exc:
        table.problem(key, str(exc))
        return default


def _read_tuple(
    field: dataclasses.Field[Any],
    item: Any,
    table: TableReader,
    env: Mapping[str, str],
    problems: list[str],
) -> tuple[Any, ...]:
    meta, key = field.metadata, field.name
    if key not in table.raw_keys() and not meta.get("env"):
        table.strings(key)  # marks the key read
        return tuple(_default(field))
    texts = table.strings(key)
    if item is not Secret:
        each = meta.get("each")
        out = [_converted(each, text, None, table, key) for text in texts]
        return tuple(value for value in out if value is not None)
    secrets = [
        resolve_secret(text, table.name(key), env, problems, needed=table.secrets_needed)
        for text in texts
    ]
    name = meta.get("env")
    if name and env.get(name, "").strip():
        from_env = Secret(env[name].strip(), source=name)
        secrets.insert(0, from_env) if meta.get("env_first") else secrets.append(from_env)
    noun = "secret" if meta.get("env_first") else "key"
    shortest = meta.get("min_length")
    for secret in secrets:
        if shortest and secret.reveal() and len(secret.reveal()) < shortest:
            table.problem(
                key, f"the {noun} from {secret.source} is shorter than {shortest} characters"
            )
    return tuple(s for s in secrets if s.reveal())


def redacted(value: Any) -> Any:
    """Plain data for printing: secrets show where they come from, URLs lose passwords."""
    if isinstance(value, Secret):
        return "" if value.source == "missing" else str(value)  # "": reads back as missing
    describe = getattr(value, "describe", None)
    if callable(describe) and not isinstance(value, type):  # compiled objects (rules)
        return describe()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for field in dataclasses.fields(value):
            if field.metadata.get("moved_to"):
                continue  # shown where it moved to
            shown = getattr(value, field.name)
            if field.metadata.get("secret_url"):
                shown = _url_without_password(shown)
            out[field.name] = redacted(shown)
        return out
    if isinstance(value, Mapping):
        return {key: redacted(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [redacted(item) for item in value]
    if isinstance(value, IPv4Network | IPv6Network):
        return str(value)
    return value


def move_deprecated(settings: T, data: Mapping[str, Any], problems: list[str]) -> T:
    """`settings` with every key written where it used to be (`moved_to`) moved to its new
    section; written in both places: a problem (which one is meant cannot be guessed)."""
    moved: dict[str, Any] = {}
    for name, field, value in _deprecated(settings):
        to = field.metadata["moved_to"]
        written = data.get(to)
        if isinstance(written, Mapping) and field.name in written:
            problems.append(
                f"{name}.{field.name}: moved to [{to}] {field.name}, which is set too: "
                f"remove it from [{name}]"
            )
            continue
        moved[to] = dataclasses.replace(moved.get(to, getattr(settings, to)), **{field.name: value})
    return dataclasses.replace(settings, **moved)


def deprecation_warnings(settings: Any) -> list[str]:
    """One line per key written where it used to be (read there, for now)."""
    return [
        f"{name}.{field.name} is deprecated: write it as [{field.metadata['moved_to']}] "
        f"{field.name}"
        for name, field, _ in _deprecated(settings)
    ]


def _deprecated(settings: Any) -> Iterator[tuple[str, dataclasses.Field[Any], Any]]:
    """(section name, field, value) of every moved key written in its old section."""
    for section_field in dataclasses.fields(settings):
        section = getattr(settings, section_field.name)
        if not dataclasses.is_dataclass(section) or isinstance(section, type):
            continue
        for field in dataclasses.fields(section):
            value = getattr(section, field.name)
            if field.metadata.get("moved_to") and value is not None:
                yield section_field.name, field, value


def secret_values(value: Any) -> Iterator[str]:
    """Every secret value held anywhere in a settings object (for the redacting log filter)."""
    for secret in _secrets_held(value):
        if secret.reveal():
            yield secret.reveal()
    yield from _url_passwords(value)


def secret_files(value: Any) -> Iterator[str]:
    """The path of every `file:` secret in a settings object (watched for a reload)."""
    for secret in _secrets_held(value):
        if secret.source.startswith("file:"):
            yield secret.source[5:]


def _secrets_held(value: Any) -> Iterator[Secret]:
    """Every `Secret` in a settings object: in sections, tuples and mappings (postback
    sources are a mapping of name to source)."""
    if isinstance(value, Secret):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from _secrets_held(getattr(value, field.name))
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _secrets_held(item)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _secrets_held(item)


def _url_passwords(value: Any) -> Iterator[str]:
    """Passwords in URLs marked `secret_url` (the outbox URL), in any section."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            held = getattr(value, field.name)
            if field.metadata.get("secret_url") and isinstance(held, str) and "@" in held:
                password = urlsplit(held).password
                if password:
                    yield password
            yield from _url_passwords(held)


def _url_without_password(url: str) -> str:
    url = re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)  # user:password@
    return re.sub(r"\?.*$", "?***", url) if "?" in url else url  # ?password=… and friends


__all__ = [
    "choice",
    "deprecation_warnings",
    "move_deprecated",
    "read_section",
    "redacted",
    "secret_files",
    "secret_values",
    "setting",
]
