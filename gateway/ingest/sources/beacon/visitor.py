"""What the server knows about the visitor behind one beacon, and the cookies to set back.

Read once per beacon from the connection and the first-party cookies; for each event it
gives the `Observed` facts the parser merges (IP, user agent, `_ttp`, the click id by the
spec's precedence — landing URL, referrer, what the page sent, the cookie — and the locale),
without writing anything into the visitor's own JSON. It also tracks the signed record, so
the answer sets only the cookies that changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gateway.ingest.policy import Observed
from gateway.ingest.sources.beacon.cookies import VisitorCookies, VisitorRecord, new_visitor_id
from gateway.ingest.sources.beacon.enrich import locale_from_header, resolve_click_id, valid_token

Headers = list[tuple[bytes, bytes]]


class Visitor:
    """One beacon's visitor: facts from the connection, state from the signed cookie."""

    def __init__(
        self,
        jar: VisitorCookies,
        *,
        ip: str | None,
        user_agent: str,
        accept_language: str | None,
        cookies: Mapping[str, str],
        generate_ttp: bool,
        now: float,
        ip_from: str = "socket",
    ) -> None:
        self._jar = jar
        self._ip_from = ip_from
        self._ip, self._user_agent, self._now = ip, user_agent, now
        self._locale = locale_from_header(accept_language)
        self._cookies = cookies
        self._generate_ttp = generate_ttp
        self._previous = previous = jar.read_visitor(cookies.get(jar.signed_name))
        if previous is None or not previous.visitor:  # a first visit, or a cookie older than ids
            self._record = replace(previous or VisitorRecord(), visitor=new_visitor_id())
        else:
            self._record = previous
        self._ttp = valid_token(cookies.get("_ttp"))
        self._ttp_from = "cookie"

    def observe(self, user: Any, page_url: Any, referrer: Any) -> Observed:
        """The server's facts for one event; `user` is what the page sent (not changed)."""
        sent = user if isinstance(user, dict) else {}
        ttp, ttp_from = self._ttp, self._ttp_from
        if ttp is None:
            ttp, ttp_from = valid_token(sent.get("ttp")), "event"
            if ttp is None and self._generate_ttp:
                ttp = self._jar.derived_ttp(self._ip, self._user_agent, self._now)
                ttp_from = "generated"
        self._ttp, self._ttp_from = ttp, ttp_from
        record = self._record
        cookie = self._cookies.get("ttclid")
        ttclid, ttclid_from = resolve_click_id(
            page_url if isinstance(page_url, str) else None,
            referrer if isinstance(referrer, str) else None,
            sent.get("ttclid"),
            cookie or record.ttclid,
        )
        if ttclid_from == "cookie" and not cookie:
            ttclid_from = "signed cookie"
        fresh_click = None
        if ttclid:
            if ttclid != record.ttclid:  # a new click (or a plain cookie without its keeper)
                record = self._record = replace(record, ttclid=ttclid, first_seen=int(self._now))
            if self._now - record.first_seen <= self._jar.attribution_window_seconds:
                fresh_click = ttclid  # an older click is remembered but no longer sent
        return Observed(
            ip=self._ip,
            user_agent=self._user_agent or None,
            ttp=ttp,
            ttclid=fresh_click,
            ttclid_at=record.first_seen if fresh_click else None,
            locale=self._locale,
            ip_from=self._ip_from,
            ttclid_from=ttclid_from if fresh_click else "",
            ttp_from=ttp_from if ttp else "",
            visitor=record.visitor,
        )

    def cookies_to_set(self) -> Headers:
        """Only what changed: a returning visitor's beacons usually set no cookie at all."""
        out: Headers = []
        jar, record, now = self._jar, self._record, self._now
        fresh = now - record.first_seen <= jar.attribution_window_seconds
        to_set = record.ttclid if fresh and self._cookies.get("ttclid") != record.ttclid else None
        if to_set:
            out.append((b"set-cookie", jar.ttclid_cookie(to_set).encode()))
        today = int(now // 86400)
        if self._ttp and record.ttp_day != today:
            out.append((b"set-cookie", jar.ttp_cookie(self._ttp).encode()))
            record = replace(record, ttp_day=today)
        previous = self._previous
        if to_set or (record is not previous and record != (previous or VisitorRecord())):
            # with each `ttclid` set: the record must outlive the cookie
            out.append((b"set-cookie", jar.visitor_cookie(record, now).encode()))
        return out
