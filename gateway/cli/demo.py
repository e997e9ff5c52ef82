"""`tiktok-gateway demo`: a shop page, the gateway and a fake TikTok, in one command.

A newcomer sees events flow from a page to "TikTok" with no account and no configuration:
the fake Events API runs in this process, a gateway points at it with a demo pixel and a
fresh admin password (printed), and the gateway also serves a small shop page with the
snippet on it. The console shows each click as it is delivered, or dropped and why; the
shop page says when a click was dropped (a headless browser is dropped as a bot).
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from gateway.cli.common import Commands, command
from gateway.ingest.sources.beacon.snippet import STUB
from gateway.settings import Settings, parse_settings

if TYPE_CHECKING:
    from gateway.runtime import Gateway

DEMO_PIXEL = "CDEMOPIXEL0001"
DEMO_TOKEN = "demo-token-0123456789abcdef"
SHOP_PATH = "/shop"


def register(commands: Commands) -> None:
    demo = command(
        commands,
        "demo",
        "run a demo shop, the gateway and a fake TikTok Events API, with the console",
        description="Nothing to configure and nothing kept: open the printed shop and console "
        "URLs; Ctrl-C stops everything.",
    )
    demo.add_argument("--port", type=int, default=8080, help="the gateway's port (default 8080)")
    demo.add_argument("--api-port", type=int, default=0, help="the fake API's port (default: any)")
    demo.set_defaults(run=run)


_TOKEN_VARIABLE = "TIKTOK_DEMO_ACCESS_TOKEN"


def demo_settings(api_url: str, port: int, password: str, outbox_dir: str, **toml: Any) -> Settings:
    """A gateway for the demo: one pixel on the fake API, the shop's origin, the console."""
    origin = f"http://127.0.0.1:{port}"
    data: dict[str, Any] = {
        "api_base": api_url,
        "pixels": [
            {"id": DEMO_PIXEL, "access_token": f"env:{_TOKEN_VARIABLE}", "origins": [origin]}
        ],
        "server": {"host": "127.0.0.1", "port": port},
        "metrics": {"port": 0},
        "outbox": {"url": f"sqlite:///{outbox_dir}/demo-outbox.sqlite3"},
        "delivery": {"linger_ms": 0},
        "cookies": {"secure": False, "secrets": [secrets.token_urlsafe(24)]},
        "console": {"admin_password": password},
    }
    data.update(toml)
    # from "the environment": a token written in the configuration is warned against
    return parse_settings(data, {_TOKEN_VARIABLE: DEMO_TOKEN})


SHOP = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Demo shop · tiktok-gateway</title>
{STUB}
<script async src="/gw.js"></script>
<style>body{{font:15px system-ui;max-width:560px;margin:40px auto}}
button{{padding:8px 14px;margin:4px}}.dropped{{color:#b00020;font-weight:600}}</style>
</head><body>
<h1>Demo shop</h1>
<p>Each button sends an event through the gateway to the fake TikTok Events API.
Open the console in another tab to watch it arrive.</p>
<p><label>Email (hashed by the gateway) <input id="email" value="alice@example.com"></label></p>
<p><button id="view">ViewContent</button><button id="cart">AddToCart</button>
<button id="buy">Purchase</button></p>
<p><a id="ad-click" href="{SHOP_PATH}?ttclid=E.C.P.demo-click-0001">Arrive from a TikTok ad
(a link with ?ttclid=)</a></p>
<p id="sent"></p>
<script>
// The beacon's answer (x-dropped) cannot be read from sendBeacon: the page asks the gateway
// what became of the event_id instead, for a few seconds.
function send(name, params) {{
  var email = document.getElementById("email").value;
  var id = ttgw.track(name, params, email ? {{email: email}} : {{}});
  var said = document.getElementById("sent");
  said.className = "";
  said.textContent = name + " sent";
  var tries = 0;
  (function ask() {{
    fetch("{SHOP_PATH}/what-happened?event_id=" + encodeURIComponent(id))
      .then(function (r) {{ return r.json(); }}).then(function (answer) {{
        if (answer.dropped) {{
          said.className = "dropped";
          said.textContent = name + " was dropped: " + answer.dropped +
            (answer.reason === "bot" ? " (this browser says it is not a person's)" : "");
        }} else if (answer.accepted) {{
          said.textContent = name + " accepted by the gateway";
        }} else if (++tries < 25) {{
          setTimeout(ask, 200);
        }}
      }});
  }})();
}}
document.getElementById("view").onclick = function () {{
  send("ViewContent", {{content_id: "SKU_1", content_type: "product"}}); }};
document.getElementById("cart").onclick = function () {{
  send("AddToCart", {{value: 19.5, currency: "EUR",
    contents: [{{content_id: "SKU_1", price: 19.5, quantity: 1}}]}}); }};
document.getElementById("buy").onclick = function () {{
  send("Purchase", {{value: 19.5, currency: "EUR",
    contents: [{{content_id: "SKU_1", price: 19.5, quantity: 1}}]}}); }};
</script>
</body></html>"""


async def shop(request: Request) -> HTMLResponse:
    return HTMLResponse(SHOP)


def shop_routes(gateway: Gateway | None = None) -> list[Route]:
    """The demo shop page, served by the gateway itself (same origin as the beacon), and
    what became of one of its events (the demo's alone: a real site has no such route)."""
    from gateway.console.view import drop_row

    async def what_happened(request: Request) -> JSONResponse:
        wanted = request.query_params.get("event_id", "")[:128]
        if gateway is None or not wanted:
            return JSONResponse({"error": "not_found"}, 404)
        for drop in gateway.drops.search(wanted):
            return JSONResponse({"dropped": drop_row(drop)["why"], "reason": drop.reason})
        accepted = bool(gateway.recent.search(wanted))
        return JSONResponse({"accepted": accepted})

    return [
        Route(SHOP_PATH, shop, methods=["GET"]),
        Route(f"{SHOP_PATH}/what-happened", what_happened, methods=["GET"]),
    ]


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.cli.running import run_gateway
    from gateway.fake_api import FakeEventsApi
    from gateway.http.listeners import CannotListen, listening_sockets
    from gateway.http.server import uvicorn_config
    from gateway.privacy.logs import configure_logging
    from gateway.runtime import Gateway

    password = secrets.token_urlsafe(12)
    with (
        FakeEventsApi({DEMO_TOKEN: None}, port=args.api_port) as fake,
        tempfile.TemporaryDirectory(prefix="tiktok-gateway-demo-") as outbox_dir,
    ):
        settings = demo_settings(fake.url, args.port, password, outbox_dir)
        configure_logging("warning", settings.secrets())
        try:
            sockets = listening_sockets(settings)
        except CannotListen as exc:
            print(exc, file=sys.stderr)
            return 2
        gateway = Gateway(settings)
        app = create_app(gateway)
        app.router.routes.extend(shop_routes(gateway))
        base = f"http://127.0.0.1:{args.port}"
        print(f"fake TikTok Events API  {fake.url}")
        print(f"demo shop               {base}{SHOP_PATH}")
        print(f"console                 {base}{settings.console.path}")
        print(f"admin password          {password}")
        print("Ctrl-C stops everything; the demo keeps nothing.", flush=True)
        status = 0
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it ends on
            status = run_gateway(gateway, uvicorn.Server(uvicorn_config(app, settings)), sockets)
    print("demo stopped." if status == 0 else "demo not started.")
    return status
