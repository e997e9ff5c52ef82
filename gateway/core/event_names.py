"""Event-name mapping: analytics-style names to TikTok's case-sensitive event names.

TikTok matches the pixel and server copies of an event by name, so a name that arrives as
"purchase" must leave as "Purchase". The built-in table follows GA4 / CDP conventions and
targets TikTok's current names; a user map overrides it and may fan one input out to several
TikTok events. Unknown names pass through as custom events unless strict mode is on.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.core.errors import EventError

STANDARD_EVENTS = frozenset(
    {
        "AddPaymentInfo",
        "AddToCart",
        "AddToWishlist",
        "ApplicationApproval",
        "CompleteRegistration",
        "Contact",
        "CustomizeProduct",
        "Download",
        "FindLocation",
        "InitiateCheckout",
        "Lead",
        "Purchase",
        "Schedule",
        "Search",
        "StartTrial",
        "SubmitApplication",
        "Subscribe",
        "ViewContent",
    }
)
"""TikTok's current standard web events (2025+)."""

LEGACY_EVENTS = frozenset({"SubmitForm", "CompletePayment", "ClickButton", "PlaceAnOrder"})
"""Older names TikTok still accepts and converts; sent unchanged so they match the pixel."""

BUILTIN_MAP: Mapping[str, tuple[str, ...]] = {
    "page_view": ("ViewContent",),
    "view_item": ("ViewContent",),
    "view_content": ("ViewContent",),
    "add_to_cart": ("AddToCart",),
    "add_to_wishlist": ("AddToWishlist",),
    "begin_checkout": ("InitiateCheckout",),
    "initiate_checkout": ("InitiateCheckout",),
    "add_payment_info": ("AddPaymentInfo",),
    "purchase": ("Purchase",),
    "sign_up": ("CompleteRegistration",),
    "complete_registration": ("CompleteRegistration",),
    "generate_lead": ("Lead",),
    "submit_form": ("Lead",),
    "lead": ("Lead",),
    "search": ("Search",),
    "contact": ("Contact",),
    "download": ("Download",),
    "subscribe": ("Subscribe",),
    "schedule": ("Schedule",),
    "start_trial": ("StartTrial",),
}
"""Analytics-style names (matched case-insensitively) to TikTok events."""

MAX_NAME_LENGTH = 100


class EventNameMapper:
    """Resolves one input event name to the TikTok event names to send."""

    def __init__(self, user_map: Mapping[str, tuple[str, ...]], *, strict: bool) -> None:
        self._user_map = dict(user_map)
        self._user_map_folded = {k.lower(): v for k, v in user_map.items()}
        self._strict = strict

    def map(self, name: object, field: str = "event") -> tuple[str, ...]:
        if not isinstance(name, str) or not name.strip():
            raise EventError(field, "must be a non-empty event name")
        name = name.strip()
        if len(name) > MAX_NAME_LENGTH:
            raise EventError(field, f"must be at most {MAX_NAME_LENGTH} characters")
        if name in self._user_map:
            return self._user_map[name]
        folded = name.lower()
        if folded in self._user_map_folded:
            return self._user_map_folded[folded]
        if name in STANDARD_EVENTS or name in LEGACY_EVENTS:
            return (name,)
        if folded in BUILTIN_MAP:
            return BUILTIN_MAP[folded]
        if self._strict:
            raise EventError(
                field,
                f"unknown event name {name!r}: strict mode accepts TikTok standard events "
                "and names in the event_names map",
            )
        return (name,)
