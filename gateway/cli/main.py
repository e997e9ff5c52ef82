"""The `tiktok-gateway` command: parse arguments, build settings, call one function.

Each command is a module with `register(commands)` (its arguments, and its `run`); a new
command is one module and one line in `_COMMANDS`. Configuration problems end the command
with one line per problem on stderr and exit status 2; a failed send ends it with status 1;
an outbox that cannot be used, with one line naming `[outbox] url` and status 3 (the table:
docs/commands.md#exit-status); nothing here prints a secret.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.cli import (
    check_config,
    demo,
    fake_api,
    import_file,
    outbox,
    postback_dry_run,
    postback_url,
    postbacks,
    send_event,
    serve,
)
from gateway.cli.common import EXIT_CONFIG, EXIT_FAILED, EXIT_STORAGE, storage_failure
from gateway.core.errors import ConfigError, EventError, OutboxUnavailable

_COMMANDS = (
    serve,
    check_config,
    send_event,
    outbox,
    import_file,
    fake_api,
    postback_url,
    postback_dry_run,
    postbacks,
    demo,
)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiktok-gateway",
        description="First-party server-side tag gateway for the TikTok Events API. "
        "`tiktok-gateway COMMAND --help` describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="one of:"
    )
    for command in _COMMANDS:
        command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except ConfigError as exc:
        print("configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except EventError as exc:
        print(f"invalid event: {exc.field}: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except OutboxUnavailable as exc:
        print(storage_failure(exc), file=sys.stderr)
        return EXIT_STORAGE
    return status
