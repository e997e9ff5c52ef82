"""Personal data out of free text and URLs, before anything is stored or sent to TikTok.

Email addresses (scrub.py) and phone-looking numbers (phones_in_text.py) become `redacted`;
prose is also searched for national phone formats, identifiers and URL paths only for
unmistakable ones, so order numbers and SKUs survive. A URL is taken apart first: userinfo is
dropped, each part is percent-decoded up to a bound, and query parameters named for personal
data go whole; only a part that held something is re-encoded. The work per event is bounded
by its `ScanBudget`. The rules part by part: docs/design/scrubbing.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

from gateway.privacy.phones_in_text import might_hold_phone, phone_spans
from gateway.privacy.scrub import REPLACEMENT, OverBudget, ScanBudget, email_spans, replace_spans

MAX_DECODES = 4
"""Percent-decoding rounds per URL part; a part still encoded after them is replaced whole."""
_PATH_SAFE = "!$&'()*+,;=:@"
_QUERY_SAFE = "/:@!$'()*,;"
_NAME_SEPARATORS = re.compile(r"[\[\].]")
_REMEMBERED_URLS = 2048
_REMEMBERED_URL_LENGTH = 512


def parameter_name(name: str) -> str:
    """A query parameter's name as it is compared: `First-Name`, `first_name` → `firstname`.
    (Chained `replace`: `str.translate` costs four times as much.)"""
    return name.lower().replace("_", "").replace("-", "").replace(" ", "").replace("+", "")


def redact_text(text: str, *, national: bool, budget: ScanBudget) -> str:
    """`text` with emails and phone-looking numbers replaced (the same object when clean).

    Text holding percent-escapes (`jane%40example.com`, a URL pasted into a property) is
    scanned decoded too; when only the decoded form held something, it is returned."""
    clean = _redact_plain(text, national=national, budget=budget)
    if clean is not text or "%" not in text:
        return clean
    decoded = _decoded(text)
    if decoded is None:
        return REPLACEMENT
    if decoded == text:
        return text
    clean_decoded = _redact_plain(decoded, national=national, budget=budget)
    return text if clean_decoded is decoded else clean_decoded


def _redact_plain(text: str, *, national: bool, budget: ScanBudget) -> str:
    try:
        if len(text) >= 256:
            budget.spend(len(text) >> 8)
        if "@" in text:
            text = replace_spans(text, email_spans(text, budget))
        if might_hold_phone(text, national=national):
            text = replace_spans(text, phone_spans(text, national=national, budget=budget))
    except OverBudget:
        return REPLACEMENT
    return text


class UrlRedactor:
    """Redacts URLs; built once with the query parameter names that are dropped."""

    def __init__(self, dropped_parameters: Iterable[str]) -> None:
        self._dropped = frozenset(parameter_name(n) for n in dropped_parameters)
        self._verdicts: dict[str, bool] = {}  # names repeat (utm_source, ttclid…)
        self._clean: set[str] = set()  # so do URLs: a visitor's page and referrer, each beacon

    def redact(self, url: str, budget: ScanBudget) -> str:
        """`url` without personal data (the same object when it held none)."""
        if url in self._clean:
            return url
        if self._plainly_clean(url):
            if len(url) <= _REMEMBERED_URL_LENGTH:  # bounded whatever URLs clients invent
                if len(self._clean) >= _REMEMBERED_URLS:
                    self._clean.clear()
                self._clean.add(url)
            return url
        head, hash_mark, fragment = url.partition("#")
        head, question_mark, query = head.partition("?")
        authority_end = _authority_end(head)
        pieces = [_without_userinfo(head[:authority_end], budget)]
        pieces.append(_path(head[authority_end:], budget))
        if question_mark:
            kept = self._query(query, budget)
            if kept or not query:  # a query emptied by dropping loses its `?`
                pieces += ("?", kept)
        if hash_mark:
            pieces += ("#", self._fragment(fragment, budget))
        clean = "".join(pieces)
        return url if clean == url else clean

    def _plainly_clean(self, url: str) -> bool:
        """The common URL, seen at a glance: nothing encoded, no `@`, `+`, `#` nor a second
        `:`, no run of digits in its query and no parameter to drop."""
        if "@" in url or "%" in url or "+" in url or "#" in url or url.count(":") > 1:
            return False
        query = url.partition("?")[2]
        if not query:
            return True
        if might_hold_phone(query, national=True):
            return False
        return not any(self._is_dropped(pair.partition("=")[0]) for pair in query.split("&"))

    def _is_dropped(self, name: str) -> bool:
        verdict = self._verdicts.get(name)
        if verdict is None:
            verdict = self._judge(name)
            if len(name) <= 64:
                if len(self._verdicts) >= 4096:  # bounded whatever names clients invent
                    self._verdicts.clear()
                self._verdicts[name] = verdict
        return verdict

    def _judge(self, name: str) -> bool:
        lowered = name.lower()
        if "[" in lowered or "." in lowered:  # billing[email], customer.phone
            return any(
                parameter_name(part) in self._dropped for part in _NAME_SEPARATORS.split(lowered)
            )
        return parameter_name(lowered) in self._dropped

    def _query(self, query: str, budget: ScanBudget) -> str:
        kept: list[str] = []
        for pair in query.split("&"):
            try:
                budget.spend()
            except OverBudget:
                kept.append(REPLACEMENT)
                break
            raw_key, equals, raw_value = pair.partition("=")
            key = _decoded(raw_key)
            if key is None or self._is_dropped(key):
                continue
            clean_key = _part(raw_key, key, national=True, budget=budget, safe=_QUERY_SAFE)
            value = _query_value(raw_value, budget) if equals else ""
            kept.append(f"{clean_key}{equals}{value}")
        clean = "&".join(kept)
        return query if clean == query else clean

    def _fragment(self, fragment: str, budget: ScanBudget) -> str:
        """A fragment is a path (`#/checkout`), a query (`#a=1&b=2`) or both (`#/p?a=1`)."""
        route, question_mark, query = fragment.partition("?")
        if not question_mark and "=" in route:
            return self._query(route, budget)
        clean = _path(route, budget)
        if question_mark:
            kept = self._query(query, budget)
            clean += f"?{kept}" if kept else ""
        return clean


def _authority_end(head: str) -> int:
    """Where `scheme://authority` ends (0 when `head` has none, as in a relative URL)."""
    colon = head.find(":")
    if head.startswith("//"):
        start = 2
    elif colon > 0 and head.startswith("//", colon + 1) and "/" not in head[:colon]:
        start = colon + 3
    else:
        return 0
    slash = head.find("/", start)
    return len(head) if slash == -1 else slash


def _without_userinfo(scheme_and_authority: str, budget: ScanBudget) -> str:
    at = scheme_and_authority.rfind("@")
    if at == -1:
        return scheme_and_authority
    start = scheme_and_authority.find("//") + 2
    host = scheme_and_authority[at + 1 :]
    return scheme_and_authority[:start] + redact_text(host, national=False, budget=budget)


def _path(path: str, budget: ScanBudget) -> str:
    if "%" not in path and "@" not in path and not might_hold_phone(path, national=False):
        return path
    segments = path.split("/")
    clean = [_segment(segment, budget) for segment in segments]
    return path if clean == segments else "/".join(clean)


def _segment(raw: str, budget: ScanBudget) -> str:
    try:
        budget.spend()
    except OverBudget:
        return REPLACEMENT
    text = _decoded(raw)
    if text is None:
        return REPLACEMENT
    return _part(raw, text, national=False, budget=budget, safe=_PATH_SAFE)


def _part(raw: str, text: str, *, national: bool, budget: ScanBudget, safe: str) -> str:
    """`raw`, unless its decoded `text` held personal data: then the clean text, encoded."""
    clean = redact_text(text, national=national, budget=budget)
    return raw if clean is text else quote(clean, safe=safe)


def _query_value(raw: str, budget: ScanBudget) -> str:
    text = _decoded(raw)
    if text is None:
        return REPLACEMENT
    clean = redact_text(text, national=True, budget=budget)
    if clean is text and "+" in text:  # a form's `+` is a space: `0151+1234+5678`
        spaced = text.replace("+", " ")
        clean_spaced = redact_text(spaced, national=True, budget=budget)
        if clean_spaced is not spaced:
            clean = clean_spaced
    return raw if clean is text else quote(clean, safe=_QUERY_SAFE)


def _decoded(raw: str) -> str | None:
    """`raw` percent-decoded until it no longer changes; None if still encoded past the bound."""
    text = raw
    for _ in range(MAX_DECODES + 1):
        if "%" not in text:
            return text
        decoded = unquote(text)
        if decoded == text:
            return text
        text = decoded
    return None
