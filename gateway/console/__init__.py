"""The live console (`/console`): every event, its match keys, score and TikTok's answer.

auth.py       the admin password, the signed session cookie, the CSRF token
pages.py      the login form and the app shell (no inline script: a strict CSP)
live.py       Server-Sent Events from `RecentEvents`, listening only while a page watches
replicas.py   with Redis, every replica's events and outcomes, shared while a page watches
view.py       one event as the page sees it: hashed, shortened, never the token
postbacks.py  the postback log as the page shows it: rules fired or why not, and outcomes
endpoints.py  the routes: stream, event detail, overview, dead letters, postbacks, replay,
              send-test

The script and style sheet are `static/console.js` and `static/console.css`, shipped in
the package as `gateway.static`.
"""

from gateway.console.endpoints import routes

__all__ = ["routes"]
