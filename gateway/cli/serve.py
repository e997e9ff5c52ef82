"""`tiktok-gateway serve`: run the gateway (uvicorn serving the app around one `Gateway`)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from gateway.cli.common import Commands, add_config, command, settings_of

log = logging.getLogger(__name__)


def register(commands: Commands) -> None:
    serve = command(
        commands,
        "serve",
        "run the gateway",
        description="Exit status 2: a configuration error or a port that cannot be listened "
        "on; 3: the outbox cannot be used ([outbox] url). Both in one line.",
    )
    add_config(serve)
    serve.add_argument("--host", help="interface to listen on (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default from config: 8080)")
    serve.add_argument(
        "--metrics-port", type=int, help="port of the metrics listener (default: 9464; 0: none)"
    )
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # SIGHUP reloads once the gateway runs (web/app.py); until then, and while it stops,
    # it is ignored rather than fatal (a logrotate or `systemctl reload` at the wrong
    # moment). The delivery process inherits this, and ignores it itself too.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    import uvicorn

    from gateway.app import create_app
    from gateway.cli.running import run_gateway
    from gateway.core import heap
    from gateway.http.listeners import CannotListen, listeners, listening_sockets
    from gateway.http.server import uvicorn_config
    from gateway.privacy.logs import configure_logging
    from gateway.runtime import Gateway
    from gateway.settings import Settings

    settings = settings_of(args, host=args.host, port=args.port, metrics_port=args.metrics_port)
    configure_logging(settings.log_level, settings.secrets(), settings.log_format)
    try:
        sockets = listening_sockets(settings)
    except CannotListen as exc:
        print(exc, file=sys.stderr)
        return 2
    for listener in listeners(settings):
        log.info("listening on %s (%s)", listener.url, listener.name)
    overrides = {"host": args.host, "port": args.port, "metrics_port": args.metrics_port}
    # SIGHUP, or a change of the file or of a `file:` secret, reads the configuration again
    config_file = args.config or os.environ.get("GATEWAY_CONFIG") or None
    gateway = Gateway(
        settings, reload=lambda: settings_of(args, **overrides), config_file=config_file
    )
    secrets = settings.secrets()

    def redact_new_secrets(new: Settings) -> None:
        """A reloaded file may hold new secrets (a token): the log filter learns them, and
        keeps the old ones (a revoked token is still nobody's business). The level and
        format stay (`new` has the start-up ones: they need a restart), as in delivery."""
        secrets.extend(s for s in new.secrets() if s not in secrets)
        configure_logging(new.log_level, secrets, new.log_format)

    gateway.live.on_reload(redact_new_secrets)
    app = create_app(gateway)
    heap.for_serving()
    config = uvicorn_config(
        app,
        settings,
        access_log=args.access_log,
        on_refused=gateway.metrics.connection_refused,
    )
    return run_gateway(gateway, uvicorn.Server(config), sockets)
