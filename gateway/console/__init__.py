"""The live console (`/console`): every event, its match keys, score and TikTok's answer.

auth.py       the admin password, the signed session and device cookies, the CSRF token
login.py      login and logout: the login budgets, a logout every replica honours
pages.py      the login form and the app shell (no inline script: a strict CSP)
live.py       Server-Sent Events from `RecentEvents`, listening only while a page watches
view.py       one event as the page sees it: hashed, shortened, never the token
postbacks.py  the postback log as the page shows it: rules fired or why not, and outcomes
endpoints.py  the routes; the script and styles are `static/console.js` and `console.css`
"""

from gateway.console.endpoints import routes

__all__ = ["routes"]
