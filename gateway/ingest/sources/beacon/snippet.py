"""The browser snippet, rendered once at start-up and served with an ETag and gzip.

The event-name map is rendered into the script so the pixel is told the same TikTok event
name the gateway will send: without it `ttgw.track("purchase")` would reach the pixel as a
custom event "purchase" and the server copy as "Purchase", and TikTok could not deduplicate.
The same map decides which GA4 dataLayer events the snippet forwards. The source keeps its
comments; the served script drops comment lines and indentation, so every visitor does not
download them (the size budget, 3 KB gzipped, is checked on what is served).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from gateway.core.event_names import BUILTIN_MAP
from gateway.settings import Settings

STUB = (
    '<script>!function(w){var g=w.ttgw=w.ttgw||{q:[]};"track identify consent config"'
    ".split(' ').forEach(function(m){g[m]=g[m]||function(){"
    "g.q.push([m,[].slice.call(arguments)])}});w.addEventListener('error',function(e){"
    "if(/analytics\\.tiktok\\.com/.test(e.target&&e.target.src||''))g.px=1},!0)}(window);</script>"
)
"""The queue stub a page puts before the async script tag, so early calls are kept; it also
notes when the TikTok pixel's script fails to load (an ad blocker answers at once, before
the async snippet runs), so each event can say whether the pixel took its own copy."""

_COMMENT_LINES = re.compile(r"^[ \t]*//.*\n", re.MULTILINE)
_INDENTATION = re.compile(r"^[ \t]+", re.MULTILINE)


def _served(source: str) -> str:
    """The source without whole-line `//` comments and indentation.

    Safe for gw.js, which has no multi-line strings; a comment after code stays.
    """
    return _INDENTATION.sub("", _COMMENT_LINES.sub("", source))


def render_snippet(settings: Settings) -> bytes:
    names: dict[str, list[str]] = {k: list(v) for k, v in BUILTIN_MAP.items()}
    names.update({k.lower(): list(v) for k, v in settings.event_names.items()})
    names.update({k: list(v) for k, v in settings.event_names.items()})
    template = resources.files("gateway.static").joinpath("gw.js").read_text(encoding="utf-8")
    source = (
        _served(template)
        .replace("__BEACON_PATH__", settings.browser.beacon_path)
        .replace("__NAME_MAP__", json.dumps(names, separators=(",", ":"), sort_keys=True))
    )
    return source.encode("utf-8")


class SnippetEndpoint:
    """Serves the snippet: 304 for a matching If-None-Match, gzip when accepted."""

    def __init__(self, settings: Settings, *, max_age: int = 3600) -> None:
        self.body = render_snippet(settings)
        self.gzipped = gzip.compress(self.body, compresslevel=9, mtime=0)
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'
        self._headers = {
            "ETag": self.etag,
            "Cache-Control": f"public, max-age={max_age}",
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
            "Cross-Origin-Resource-Policy": "cross-origin",
        }

    async def handle(self, request: Request) -> Response:
        if self.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=self._headers)
        media = "application/javascript; charset=utf-8"
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers = {**self._headers, "Content-Encoding": "gzip"}
            return Response(self.gzipped, media_type=media, headers=headers)
        return Response(self.body, media_type=media, headers=self._headers)
