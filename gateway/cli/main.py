"""The `tiktok-gateway` command: parse arguments, build settings, call one function.

Configuration problems end the command with one line per problem on stderr and exit
status 2; a failed send ends it with status 1; nothing here prints a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from typing import Any

from gateway import __version__
from gateway.core.errors import ConfigError, EventError
from gateway.outbox import OutboxUnavailable
from gateway.settings import Settings, load_settings

EXIT_FAILED = 1
EXIT_CONFIG = 2


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="PATH", help="TOML config file (default: $GATEWAY_CONFIG, or none)"
    )


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if days < 0:
        raise argparse.ArgumentTypeError("must be 0 or more days")
    return days


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiktok-gateway",
        description="First-party server-side tag gateway for the TikTok Events API.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway")
    _add_config(serve)
    serve.add_argument("--host", help="interface to listen on (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default from config: 8080)")
    serve.add_argument("--access-log", action="store_true", help="log every request")

    check = commands.add_parser("check-config", help="validate and print the configuration")
    _add_config(check)

    test = commands.add_parser(
        "send-test", help="send one event straight to the Events API and print the answer"
    )
    _add_config(test)
    test.add_argument("--event", required=True, help="event name, e.g. Purchase or purchase")
    test.add_argument("--email")
    test.add_argument("--phone")
    test.add_argument("--external-id")
    test.add_argument("--ttclid")
    test.add_argument("--ip")
    test.add_argument("--user-agent")
    test.add_argument("--url", help="page URL (web events need one)")
    test.add_argument("--value")
    test.add_argument("--currency")
    test.add_argument("--test-event-code", help="code from Events Manager > Test events")
    test.add_argument("--pixel", help="pixel id (default: the first configured pixel)")

    outbox = commands.add_parser("outbox", help="show what waits in the outbox, per pixel")
    _add_config(outbox)
    outbox.add_argument(
        "--dead", type=int, default=0, metavar="N", help="list the N newest dead letters"
    )
    outbox.add_argument("--json", action="store_true", help="print JSON")

    replay = commands.add_parser("replay", help="move dead letters back to pending")
    _add_config(replay)
    replay.add_argument("--pixel", help="only this pixel's dead letters")
    replay.add_argument("--code", type=int, help="only dead letters with this TikTok code")

    purge = commands.add_parser("purge-dead", help="delete old dead letters")
    _add_config(purge)
    purge.add_argument("--older-than", type=_days, required=True, metavar="DAYS")

    fake = commands.add_parser(
        "fake-api", help="run a local fake TikTok Events API (to try the gateway without TikTok)"
    )
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=9090)
    fake.add_argument(
        "--token", action="append", help="accepted access token (repeatable; default test-token)"
    )
    fake.add_argument(
        "--delay", type=float, default=0.0, help="answer every request after this many seconds"
    )
    fake.add_argument(
        "--no-record", action="store_true", help="count events but keep no bodies (load tests)"
    )
    fake.add_argument(
        "--no-validate", action="store_true", help="accept without checking (load tests only)"
    )
    return parser


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(args.config, overrides=overrides)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.core.logs import configure_logging
    from gateway.runtime import Gateway
    from gateway.web.app import create_app

    settings = _settings(args, host=args.host, port=args.port)
    configure_logging(settings.log_level, settings.secrets())
    uvicorn.run(
        create_app(Gateway(settings)),
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,
        access_log=args.access_log,
        server_header=False,
        proxy_headers=False,  # the gateway decides itself which proxies to trust
    )
    return 0


def _check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(json.dumps(settings.redacted(), indent=2))
    print("configuration OK", file=sys.stderr)
    return 0


def _send_test(args: argparse.Namespace) -> int:
    from gateway.cli.send_test import TestEvent, send_test
    from gateway.delivery.client import TRACK_PATH

    settings = _settings(args)
    test = TestEvent(
        event=args.event,
        email=args.email,
        phone=args.phone,
        external_id=args.external_id,
        ttclid=args.ttclid,
        ip=args.ip,
        user_agent=args.user_agent,
        url=args.url,
        value=args.value,
        currency=args.currency,
        test_event_code=args.test_event_code,
        pixel=args.pixel,
    )
    result = asyncio.run(send_test(settings, test))
    print(f"POST {settings.api_base}{TRACK_PATH}")
    print(json.dumps(result.body, indent=2))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    answer = {
        "code": result.outcome.code,
        "message": result.outcome.message,
        "request_id": result.outcome.request_id,
        "http_status": result.outcome.http_status,
    }
    print("TikTok answered:", json.dumps(answer))
    print(result.explanation(), file=sys.stdout if result.outcome.delivered else sys.stderr)
    return 0 if result.outcome.delivered else EXIT_FAILED


def _outbox(args: argparse.Namespace) -> int:
    from gateway.cli.operator import outbox_report

    report = asyncio.run(outbox_report(_settings(args), dead=args.dead))
    if args.json:
        print(
            json.dumps({"counts": report["json"], "dead_letters": report["dead_letters"]}, indent=2)
        )
        return 0
    print(report["table"])
    for letter in report["dead_letters"]:
        print(
            f"dead {letter['id']}: pixel {letter['pixel']} {letter['event']} "
            f"event_id={letter['event_id']} after {letter['attempts']} attempt(s): "
            f"{letter['reason']}"
        )
    return 0


def _replay(args: argparse.Namespace) -> int:
    from gateway.cli.operator import replay

    moved = asyncio.run(replay(_settings(args), pixel=args.pixel, code=args.code))
    print(f"{moved} dead letter(s) moved back to pending")
    return 0


def _purge_dead(args: argparse.Namespace) -> int:
    from gateway.cli.operator import purge_dead

    removed = asyncio.run(purge_dead(_settings(args), older_than_days=args.older_than))
    print(f"{removed} dead letter(s) older than {args.older_than:g} day(s) deleted")
    return 0


def _fake_api(args: argparse.Namespace) -> int:
    from gateway.fake_api import FakeEventsApi, Fault

    fake = FakeEventsApi(
        {token: None for token in (args.token or ["test-token"])},
        host=args.host,
        port=args.port,
        record_bodies=not args.no_record,
        validate=not args.no_validate,
    )
    if args.delay:
        fake.add_fault(Fault(delay=args.delay, times=None))
    print(f"fake TikTok Events API on http://{args.host}:{args.port} (Ctrl-C to stop)")
    print(f"point the gateway at it: TIKTOK_API_BASE=http://{args.host}:{args.port}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(fake.serve_forever())
    return 0


_COMMANDS = {
    "serve": _serve,
    "check-config": _check_config,
    "send-test": _send_test,
    "outbox": _outbox,
    "replay": _replay,
    "purge-dead": _purge_dead,
    "fake-api": _fake_api,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        print("configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except EventError as exc:
        print(f"invalid event: {exc.field}: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except OutboxUnavailable as exc:
        print(f"outbox unavailable: {exc}", file=sys.stderr)
        return EXIT_FAILED
