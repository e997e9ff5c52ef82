"""The console's two HTML pages: the login form and the app shell the script fills in.

Plain HTML with no inline script or style, so the Content-Security-Policy can forbid both:
the behaviour is `console.js` and the look `console.css`, shipped in the package and served
from the console's own path — the page works with no internet and asks no other host.
"""

from __future__ import annotations

from html import escape

from starlette.responses import HTMLResponse

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _page(path: str, title: str, body: str, *, meta: str = "") -> str:
    base = escape(path)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · tiktok-gateway</title>{meta}
<link rel="stylesheet" href="{base}/assets/console.css">
</head><body>
<header><h1>tiktok-gateway</h1><span class="sub">{escape(title)}</span></header>
{body}
</body></html>"""


def login_page(path: str, *, error: str = "", status: int = 200) -> HTMLResponse:
    base = escape(path)
    message = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = f"""<main class="login"><form method="post" action="{base}/login">
{message}<label>Admin password <input type="password" name="password" id="password"
autocomplete="current-password" autofocus required></label>
<button type="submit" id="login">Log in</button></form></main>"""
    return HTMLResponse(_page(path, "console login", body), status, HEADERS)


def app_page(path: str, csrf: str, pixels: list[str], sources: list[str]) -> HTMLResponse:
    """The app shell; `csrf` goes in a meta tag for the script and in the logout form."""
    base = escape(path)
    options = "".join(f'<option value="{escape(p)}">{escape(p)}</option>' for p in pixels)
    senders = "".join(f'<option value="{escape(s)}">{escape(s)}</option>' for s in sources)
    meta = (
        f'\n<meta name="csrf-token" content="{escape(csrf)}">'
        f'\n<meta name="console-path" content="{base}">'
        f'\n<script src="{base}/assets/console.js" defer></script>'
        f'\n<script src="{base}/assets/search.js" defer></script>'
    )
    tabs = (
        _live_tab(options),
        _search_tab(),
        _overview_and_dead_tabs(),
        _postbacks_tab(senders),
        _test_tab(options),
    )
    body = "\n".join((_nav(base, escape(csrf)), *tabs))
    return HTMLResponse(_page(path, "console", body, meta=meta), 200, HEADERS)


def _nav(base: str, csrf: str) -> str:
    return f"""<nav>
<button data-tab="live" class="active">Live events</button>
<button data-tab="search">Search</button>
<button data-tab="overview">Overview</button>
<button data-tab="dead">Dead letters</button>
<button data-tab="postbacks">Postbacks</button>
<button data-tab="test">Send a test event</button>
<form method="post" action="{base}/logout" class="logout">
<input type="hidden" name="csrf" value="{csrf}"><button>Log out</button></form>
</nav>"""


def _live_tab(options: str) -> str:
    return f"""<section id="live" class="tab">
<div class="filters">
<select id="f-pixel"><option value="">every pixel</option>{options}</select>
<input id="f-source" placeholder="source (browser, server…)">
<input id="f-event" placeholder="event name">
<select id="f-outcome"><option value="">any outcome</option>
<option>accepted</option><option>delivered</option><option>retry</option>
<option>dead_lettered</option><option>dropped</option></select>
<label><input type="checkbox" id="pause"> pause</label>
<span id="status" class="status">connecting…</span>
</div>
<table id="events"><thead><tr><th>time</th><th>source</th><th>pixel</th><th>event</th>
<th>event_id</th><th>match keys</th><th>score</th><th>delivery</th></tr></thead>
<tbody></tbody></table>
<div id="detail" class="detail" hidden></div>
</section>"""


def _search_tab() -> str:
    return """<section id="search" class="tab" hidden>
<form id="search-form" class="filters">
<input id="search-q" placeholder="event_id or order_id" maxlength="128" size="40" required>
<button type="submit" id="search-go">Search</button>
<span id="search-note" class="status">accepted, delivered, dropped, waiting, dead-lettered</span>
</form>
<table id="search-results"><thead><tr><th>time</th><th>where</th><th>source</th><th>pixel</th>
<th>event</th><th>event_id</th><th>order_id</th><th>what happened</th></tr></thead>
<tbody></tbody></table>
</section>"""


def _overview_and_dead_tabs() -> str:
    return """<section id="overview" class="tab" hidden><div id="overview-body"></div></section>
<section id="dead" class="tab" hidden>
<p><button id="dead-refresh">Refresh</button></p>
<div id="dead-body"></div>
</section>"""


def _postbacks_tab(senders: str) -> str:
    return f"""<section id="postbacks" class="tab" hidden>
<div class="filters">
<select id="pb-source"><option value="">every source</option>{senders}</select>
<label><input type="checkbox" id="pb-none"> only those that fired nothing</label>
<button id="pb-refresh">Refresh</button>
<span class="status">refreshed every 2 s while shown</span>
</div>
<table id="postback-log"><thead><tr><th>time</th><th>source</th><th>trigger</th>
<th>ttclid</th><th>rules fired → events (TikTok's answer)</th><th>rules not fired: why</th>
<th>fields (identifiers hashed)</th></tr></thead><tbody></tbody></table>
<p id="pb-empty" hidden></p>
</section>"""


def _test_tab(options: str) -> str:
    return f"""<section id="test" class="tab" hidden>
<form id="send-test">
<label>Pixel <select name="pixel">{options}</select></label>
<label>Event <input name="event" value="Purchase" required></label>
<label>Email <input name="email" type="email"></label>
<label>Phone <input name="phone"></label>
<label>External id <input name="external_id"></label>
<label>ttclid <input name="ttclid"></label>
<label>Page URL (web events) <input name="url" type="url" placeholder="https://shop.example/"></label>
<label>Value <input name="value"></label>
<label>Currency <input name="currency" value="EUR"></label>
<label>Test event code <input name="test_event_code"></label>
<button type="submit">Send now</button>
</form>
<pre id="send-test-result"></pre>
</section>"""
