"""`tiktok-gateway fake-api`: a local fake TikTok Events API, to try the gateway without TikTok."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from gateway.cli.common import Commands, command


def register(commands: Commands) -> None:
    fake = command(
        commands,
        "fake-api",
        "run a local fake TikTok Events API (to try the gateway without TikTok)",
        description="Point a gateway at it with TIKTOK_API_BASE=http://HOST:PORT.",
    )
    fake.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    fake.add_argument("--port", type=int, default=9090, help="port (default 9090)")
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
    fake.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
