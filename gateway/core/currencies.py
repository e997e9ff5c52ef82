"""The currencies a `currency` may name: ISO 4217 codes TikTok accepts for `value`.

The set is TikTok's own currency list as lead systems show it in their TikTok tracking
rule: the LMS seed in the project's references lists 62 codes (its issue said 60; every one
it names is here), and TikTok documents no other. A code outside it is an
error naming the field, never a silently dropped value: TikTok ignores a value whose
currency it does not know, and the conversion would then count for nothing.
"""

from __future__ import annotations

_LISTED = (
    "AED ARS AUD BDT BHD BIF BOB BRL CAD CHF CLP CNY COP CRC CZK DKK DZD EGP EUR GBP "
    "GTQ HKD HNL HUF IDR ILS INR ISK JPY KES KHR KRW KWD KZT MAD MOP MXN MYR NGN NIO "
    "NOK NZD OMR PEN PHP PKR PLN PYG QAR RON RUB SAR SEK SGD THB TRY TWD UAH USD VES "
    "VND ZAR"
)
CURRENCIES = frozenset(_LISTED.split())


def currency(text: str) -> str | None:
    """The upper-cased code when TikTok accepts it, else None."""
    code = text.strip().upper()
    return code if code in CURRENCIES else None
