"""The one scrubber every free-text field and URL of an event passes through, and what it
changed, by field, for `/metrics` (the rules themselves are in privacy/redact.py).

Fields are scrubbed by what they are: prose (`description`, `search_string`, content names,
custom properties) for every phone format; identifiers (`order_id`, content ids, the app /
ad / lead sections, the raw user fields) only for emails and unmistakable phone numbers,
so an order number such as `4500123456789` survives; URLs part by part.
"""

from __future__ import annotations

from gateway.privacy.redact import UrlRedactor, redact_text
from gateway.privacy.scrub import ScanBudget
from gateway.settings import PrivacySettings

EVENT_BUDGET = 256
"""Units of scanning per event (each `@`, candidate number, query parameter, path segment
to decode, 256 characters of a long text): a millisecond or so at most. A text still to
scan past it is replaced whole by `redacted`; no real event comes near (64 KB of text,
or 256 addresses)."""


class Scrubber:
    """Built once from `[privacy]`; hands each event its own budget and record."""

    def __init__(self, privacy: PrivacySettings) -> None:
        self._urls = UrlRedactor(privacy.dropped_query_parameters())

    def for_event(self) -> EventScrub:
        return EventScrub(self._urls)


class EventScrub(ScanBudget):
    """Scrubs the texts of one event, spending its own budget; `scrubbed` names the field of
    each value it changed (a fixed set: page.url, page.referrer, properties, contents,
    user, app, ad, lead)."""

    __slots__ = ("_urls", "scrubbed")

    def __init__(self, urls: UrlRedactor) -> None:
        super().__init__(EVENT_BUDGET)
        self._urls = urls
        self.scrubbed: list[str] = []

    def text(self, field: str, text: str) -> str:
        """Prose: emails and phone numbers in any common format; a URL as a URL."""
        if text.startswith(("https://", "http://")):
            return self.url(field, text)
        return self._checked(field, text, redact_text(text, national=True, budget=self))

    def identifier(self, field: str, text: str) -> str:
        """An id or a token: emails and `+…` / `tel:` numbers only."""
        if "@" not in text and "+" not in text and ":" not in text and "%" not in text:
            return text  # the common case, decided without a scan
        return self._checked(field, text, redact_text(text, national=False, budget=self))

    def url(self, field: str, url: str) -> str:
        return self._checked(field, url, self._urls.redact(url, self))

    def _checked(self, field: str, text: str, clean: str) -> str:
        if clean is not text:
            self.scrubbed.append(field)
        return clean
