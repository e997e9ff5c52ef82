"""`tiktok-gateway postback-url SOURCE`: the URL to paste into a lead system.

It carries the source's secret (the platform can only be given a URL) and one parameter
per field its rules read, filled with the platform's macros when `macros` is configured
for the source, else with `{field}` for the user to replace by the platform's own.
"""

from __future__ import annotations

import argparse
import sys

from gateway.cli.common import EXIT_FAILED, Commands, add_config, settings_of
from gateway.cli.common import command as new_command
from gateway.ingest.sources.postback.endpoint import postback_url
from gateway.settings.tracking.rules import fields_read


def register(commands: Commands) -> None:
    command = new_command(
        commands,
        "postback-url",
        "print a source's postback URL, to paste into the lead system",
        description="It carries the source's secret: share it only with the lead system.",
    )
    command.add_argument("source", help="a source under [postbacks.sources]")
    command.add_argument(
        "--base",
        metavar="URL",
        help="the gateway's public URL (default: http://HOST:PORT from [server])",
    )
    add_config(command)
    command.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    source = settings.postbacks.sources.get(args.source)
    if source is None:
        known = ", ".join(settings.postbacks.sources) or "none configured"
        print(f"no postback source {args.source!r} ({known})", file=sys.stderr)
        return EXIT_FAILED
    macros = dict(source.macros) if source.macros is not None else {}
    if source.macros is None:
        theirs = {ours: mine for mine, ours in source.rename.items()}
        for rule in settings.postbacks.rules.rules:
            if rule.applies_to(source.name):
                for field in fields_read(rule):
                    names = list(source.triggers) if field == "trigger" else [field]
                    for name in names or [field]:
                        name = theirs.get(name, name)
                        macros.setdefault(name, f"{{{name}}}")
    base = args.base or f"http://{settings.server.host}:{settings.server.port}"
    print(postback_url(base, source, macros))
    return 0
