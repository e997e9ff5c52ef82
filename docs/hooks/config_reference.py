"""MkDocs hook: the configuration reference, generated from the settings declarations.

Every setting is declared once, as a dataclass field made by `setting(...)` (default, bounds,
environment variable, conversion). This hook walks `Settings` from the top, reads each
field's declaration and the docstring written under it, and replaces the marker in
`configuration.md` with one table per section, so the page cannot drift from the code (the
event-name map of `normalisation.md` is filled the same way, from the table the code uses).
A field without a docstring takes its description from `NOTES` below (kept from the
hand-written reference this page replaced); `tests/test_docs.py` checks that every declared
field is on the page and that every note names a field that exists.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import re
import textwrap
import typing
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from gateway.core.event_names import BUILTIN_MAP, LEGACY_EVENTS, STANDARD_EVENTS
from gateway.core.secret import Secret
from gateway.settings.model import PixelConfig, Settings

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

MARKER = "<!-- configuration-reference -->"
ENV_MARKER = "<!-- environment-reference -->"
EVENT_NAMES_MARKER = "<!-- event-names -->"

QUICK_START_ENV = {
    "TIKTOK_PIXEL_ID": "Adds a pixel with this code, or overrides the token, test event code "
    "and origins of the `[[pixels]]` table with this `id`.",
    "TIKTOK_ACCESS_TOKEN": "The Events API access token of `TIKTOK_PIXEL_ID`'s pixel.",
    "TIKTOK_PIXEL_ORIGINS": "The origins whose pages may send that pixel beacons, "
    "comma-separated (`https://shop.example,https://www.shop.example`); replaces the "
    "pixel's `origins` from a file. Without it, only backends can send that pixel events.",
    "TIKTOK_TEST_EVENT_CODE": "Send every event of that pixel as a test event.",
    "GATEWAY_CONFIG": "Path of the TOML configuration file (the same as `--config`).",
}
"""Read by the settings loader rather than declared on a field: the one-pixel quick start."""

NOTES: Mapping[str, str] = {
    "api_base": "The Events API's base URL (the fake API's, to test without TikTok).",
    "api_timeout_seconds": "How long one Events API request may take.",
    "default_phone_region": "Region of phone numbers written without a country code.",
    "max_event_age_days": "Older events are refused (TikTok documents no limit for web "
    "events; its offline connectors accept 28 days).",
    "max_clock_skew_seconds": "A browser clock further off than this is replaced by the server's.",
    "strict_event_names": "true: refuse event names that are neither TikTok's nor mapped in "
    "`[event_names]`; false: send them as custom events.",
    "event_names": 'Your names → TikTok names: `checkout_completed = "Purchase"`; a list '
    '(`signup = ["CompleteRegistration", "Lead"]`) makes one event each.',
    "log_level": "The lowest level logged.",
    "pixels": "One table per pixel or event set.",
    "pixels.id": "The pixel code (web) or event set id from TikTok Events Manager. Required.",
    "pixels.access_token": "`env:NAME`, `file:/path` or the token itself (`check-config` "
    "warns about the last). Required.",
    "pixels.event_source": "Decides the Events API's `event_source` and the rules an "
    "import applies.",
    "pixels.test_event_code": "Send every event of this pixel as a test event (remove in "
    "production).",
    "pixels.limited_data_use": "The default for this pixel's events.",
    "pixels.origins": "The origins (scheme and host, no path) whose pages may send this "
    "pixel beacons.",
    "server.host": "The public listener's address (`serve --host` overrides it).",
    "server.port": "The public listener's port (`serve --port` overrides it).",
    "server.header_timeout_seconds": "A client must send its headers within this, else 408 "
    "and the connection is closed.",
    "server.body_timeout_seconds": "No pause longer than this inside a request body, else the "
    "connection is closed.",
    "server.keep_alive_seconds": "An idle kept-alive connection is closed after this.",
    "server.max_header_bytes": "Larger headers get 431 at once.",
    "server.max_connections": "The connection over this gets a fast 503.",
    "metrics.host": "`0.0.0.0` in a container, so Prometheus on the container network can "
    "scrape it (never publish the port).",
    "metrics.port": "`serve --metrics-port` overrides it; it must differ from the public port.",
    "outbox.url": "`sqlite:///relative/path`, `sqlite:////absolute/path`, or "
    "`redis://host:6379/0` (also `rediss://`, `unix://`); a password in it is hidden "
    "wherever the configuration is printed.",
    "outbox.sqlite_synchronous": "FULL: acknowledged events survive a power loss; NORMAL: "
    "they survive a crash of the process.",
    "delivery.batch_size": "Events per Events API request (TikTok's maximum is 1,000).",
    "delivery.linger_ms": "How long to wait for a batch to fill when traffic is light.",
    "delivery.concurrency": "Requests in flight at once.",
    "delivery.backoff_initial_seconds": "First retry delay; it doubles per attempt, with jitter.",
    "delivery.backoff_max_seconds": "The longest retry delay.",
    "delivery.breaker_failures": "Transient failures in a row that open the circuit breaker.",
    "delivery.breaker_cooldown_seconds": "Pause before one probe request (doubles while failing).",
    "delivery.shutdown_grace_seconds": "On SIGTERM, how long requests in flight may take to "
    "finish.",
    "server_api.api_keys": "Keys for `POST /v1/events`, the relay and `/v1/imports` (`env:`, "
    "`file:` or inline).",
    "server_api.max_body_bytes": "Largest request body (413 above).",
    "server_api.max_events": "Events per request (413 above).",
    "rate_limit.beacon_per_second": "Sustained beacons per client address…",
    "rate_limit.beacon_burst": "…and how many may come at once (many visitors behind a NAT "
    "share one address).",
    "rate_limit.server_api_per_second": "`/v1/events`, `/v1/imports` and the relay: off by "
    "default (backends send in bursts).",
    "rate_limit.server_api_burst": "Burst for the server API, imports and the relay.",
    "rate_limit.postback_burst": "Burst for postbacks per address.",
    "rate_limit.failed_auth_burst": "Past the burst, every request of that client to those "
    "endpoints gets 429, the right key too, until the budget refills.",
    "relay.enabled": "Serve TikTok's own paths.",
    "relay.max_body_bytes": "Largest relayed request body.",
    "relay.max_events": "Events per relayed request; more than 1,000 are split downstream.",
    "browser.snippet_path": "Where the snippet is served; no word ad blockers match "
    "(tiktok, pixel, track, collect, analytics, event).",
    "browser.beacon_path": "Where beacons are posted; the same rule as `snippet_path`, and "
    "a different path.",
    "browser.max_body_bytes": "Largest beacon body.",
    "browser.max_events": "Events per beacon.",
    "network.trusted_proxies": "Only these peers may set `X-Forwarded-For` / `Forwarded`; "
    "`0.0.0.0/0` is refused.",
    "network.client_ip_header": "The one header to believe, from trusted proxies only: "
    "`x-forwarded-for`, `forwarded`, or a one-address header; unset: `X-Forwarded-For`, "
    "else `Forwarded`.",
    "browser.drop_bots": "Drop events from crawlers, HTTP libraries and headless browsers.",
    "browser.tag_testing_hosts": "Events from pages of these tag-testing tools are dropped.",
    "browser.generate_ttp": "Make a `_ttp` for visitors who have none.",
    "cookies.domain": "The site's registrable domain (`shop.example`), so its pages can read "
    "`ttclid` and `_ttp`; unset: the gateway's host only.",
    "cookies.secure": "Cookies only over HTTPS.",
    "cookies.same_site": "`None` requires `secure = true`.",
    "cookies.ttclid_max_age_days": "Lifetime of the `ttclid` cookie.",
    "cookies.ttp_max_age_days": "Lifetime of the `_ttp` cookie (re-set once a day).",
    "cookies.attribution_window_days": "A click id older than this is no longer sent.",
    "cookies.signed_name": "Name of the gateway's signed, HttpOnly cookie holding the click "
    "id and when it was first seen.",
    "console.path": "Where the console is served.",
    "console.session_hours": "How long a login lasts.",
    "postbacks.sources": "`[postbacks.sources.NAME]`: a sending system's `secret` (16+ "
    "characters), `rename`, `triggers`, `fields` and `macros`; see "
    "[Lead systems](lead-systems.md#rules).",
    "postbacks.rules": "`[[postbacks.rules]]`: the tracking rules; see "
    "[Lead systems](lead-systems.md#rules).",
    "postbacks.max_body_bytes": "Largest postback body.",
    "postbacks.context_days": "The attribution window: lead-context entries expire after it.",
    "postbacks.context_max_entries": "Past this, the oldest entries go first.",
}

TABLE_HINTS = {"pixels": PixelConfig}
"""Arrays of tables, read by a reader of their own: their rows' dataclass."""

_MODULE_PATH = re.compile(r"\s*\((?:see )?[\w./]+(?:\.py|/)\)")


class Row(typing.NamedTuple):
    """One setting as the page shows it."""

    path: str  # "rate_limit.ipv6_prefix"; a top-level key has no dot
    key: str
    type: str
    default: str
    allowed: str
    env: str
    description: str


class Section(typing.NamedTuple):
    """One table of the file: its heading, what it is for, its rows."""

    heading: str  # "[server]", "[[pixels]]", or "top level"
    anchor: str
    description: str
    rows: tuple[Row, ...]


def sections() -> list[Section]:
    """Every section of the file, in the order `Settings` declares them."""
    top: list[Row] = []
    out: list[Section] = []
    hints = typing.get_type_hints(Settings)
    notes = _field_docs(Settings)
    for field in dataclasses.fields(Settings):
        hint = hints[field.name]
        table = TABLE_HINTS.get(field.name)
        if dataclasses.is_dataclass(hint):
            out.append(_section(f"[{field.name}]", field.name, typing.cast(type, hint)))
        elif table is not None:
            section = _section(f"[[{field.name}]]", field.name, table)
            described = _join(notes.get(field.name, ""), NOTES.get(field.name, ""))
            out.append(section._replace(description=described))
        else:
            top.append(_row("", field, hint, notes))
    head = Section(
        "top level",
        "top-level",
        "Keys written before any table.",
        tuple(top),
    )
    return [head, *out]


def _section(heading: str, name: str, cls: type) -> Section:
    hints = typing.get_type_hints(cls)
    notes = _field_docs(cls)
    rows = tuple(_row(name, f, hints[f.name], notes) for f in dataclasses.fields(cls) if f.init)
    doc = inspect.getdoc(cls) or ""
    return Section(heading, name, _clean(doc.split("\n\n")[0]), rows)


def _row(section: str, field: dataclasses.Field[Any], hint: Any, docs: Mapping[str, str]) -> Row:
    path = f"{section}.{field.name}" if section else field.name
    meta = field.metadata
    return Row(
        path=path,
        key=field.name,
        type=_type(hint),
        default=_default(field),
        allowed=_allowed(meta, hint),
        env=_env(meta, hint),
        description=_join(docs.get(field.name, ""), NOTES.get(path, "")),
    )


def _field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a class (Python keeps none at run time)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = typing.cast(ast.ClassDef, tree.body[0]).body
    docs = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = _clean(after.value.value)
    return docs


def _clean(text: str) -> str:
    """One line, without the module paths code comments cite (modules move; pages stay)."""
    text = _MODULE_PATH.sub("", " ".join(text.split()))
    return text.replace("DROPPED_QUERY_PARAMETERS", "the built-in list")


def _join(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def _type(hint: Any) -> str:
    if hint is bool:
        return "boolean"
    if hint is int:
        return "integer"
    if hint is float:
        return "number"
    if hint is str:
        return "string"
    if hint is Secret:
        return "secret"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        item = args[0]
        if item is Secret:
            return "list of secrets"
        if dataclasses.is_dataclass(item):
            return "array of tables"
        if item is str:
            return "list of strings"
        return "list of CIDR ranges"
    if origin in (typing.Union, _UnionType) and type(None) in args:
        return _type(next(arg for arg in args if arg is not type(None)))
    if origin is not None and issubclass(origin, Mapping):
        return "table"
    return "array of tables"


_UnionType = type(int | None)


def _default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "—"
    return _toml(value)


def _toml(value: Any) -> str:
    if isinstance(value, Secret):
        return "—" if value.source == "missing" else f"`{value}`"
    if value is None:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"`{_number(value)}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple | list):
        if not value:
            return "`[]`"
        return "`[" + ", ".join(_toml(item).strip("`") for item in value) + "]`"
    if isinstance(value, Mapping):
        return "`{}`" if not value else f"`{dict(value)}`"
    return "—"  # compiled objects (the rules): nothing to show


def _number(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:g}"
    whole = int(value)
    return f"{whole:_}" if abs(whole) >= 10_000 else str(whole)


def _allowed(meta: Mapping[str, Any], hint: Any) -> str:
    parts = []
    if meta.get("low") is not None and meta.get("high") is not None:
        parts.append(f"{_number(meta['low'])} … {_number(meta['high'])}")
    options = _choices(meta.get("convert"))
    if options:
        parts.append(", ".join(f"`{option}`" for option in options))
    if meta.get("min_length"):
        parts.append(f"each {meta['min_length']}+ characters")
    return "; ".join(parts) or "—"


def _choices(convert: Any) -> tuple[str, ...]:
    """The options of a `choice(...)` conversion, read from its closure."""
    if convert is None or getattr(convert, "__qualname__", "") != "choice.<locals>.convert":
        return ()
    options = inspect.getclosurevars(convert).nonlocals.get("options", ())
    return tuple(options)


def _env(meta: Mapping[str, Any], hint: Any) -> str:
    name = meta.get("env")
    if not name:
        return "—"
    if typing.get_origin(hint) is tuple:
        where = "first" if meta.get("env_first") else "added"
        return f"`{name}` ({where})"
    return f"`{name}`"


def reference_markdown() -> str:
    """The tables that replace the marker: one per section, one row per setting."""
    lines: list[str] = []
    for section in sections():
        lines += [f"### {section.heading} {{ #{section.anchor} }}", ""]
        if section.description:
            lines += [section.description, ""]
        lines += [
            "| key | type | default | allowed | environment | description |",
            "|---|---|---|---|---|---|",
        ]
        for row in section.rows:
            cells = (
                f'<span id="{row.path}"></span>`{row.key}`',
                row.type,
                row.default,
                row.allowed,
                row.env,
                row.description,
            )
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def environment_markdown() -> str:
    """Every environment variable: the quick start's, then those declared on a field."""
    lines = ["| variable | meaning |", "|---|---|"]
    for name, meaning in QUICK_START_ENV.items():
        lines.append(f"| `{name}` | {meaning} |")
    for section in sections():
        for row in section.rows:
            if row.env != "—":
                lines.append(f"| {row.env} | [`{row.path}`](#{row.path}): {row.description} |")
    return "\n".join(lines)


def declared_paths() -> Iterator[str]:
    """The path of every row on the page (for the test)."""
    for section in sections():
        for row in section.rows:
            yield row.path


def event_names_markdown() -> str:
    """The built-in event-name map and TikTok's names, as the gateway applies them."""
    lines = ["| name sent (any case) | TikTok event |", "|---|---|"]
    for name, targets in BUILTIN_MAP.items():
        lines.append(f"| `{name}` | " + ", ".join(f"`{t}`" for t in targets) + " |")
    standard = ", ".join(f"`{name}`" for name in sorted(STANDARD_EVENTS))
    legacy = ", ".join(f"`{name}`" for name in sorted(LEGACY_EVENTS))
    lines += ["", f"TikTok's standard events, sent as they are: {standard}.", ""]
    lines.append(f"Older names TikTok still accepts and converts, sent unchanged: {legacy}.")
    return "\n".join(lines)


def on_page_markdown(markdown: str, /, *, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Fill the markers of the configuration and normalisation pages."""
    return (
        markdown.replace(MARKER, reference_markdown())
        .replace(ENV_MARKER, environment_markdown())
        .replace(EVENT_NAMES_MARKER, event_names_markdown())
    )
