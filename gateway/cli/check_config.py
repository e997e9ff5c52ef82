"""`tiktok-gateway check-config`: validate the configuration and print it, secrets hidden."""

from __future__ import annotations

import argparse
import json
import sys

from gateway.cli.common import Commands, add_config, settings_of


def register(commands: Commands) -> None:
    check = commands.add_parser("check-config", help="validate and print the configuration")
    add_config(check)
    check.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    print(json.dumps(settings.redacted(), indent=2))
    for warning in settings.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    print("configuration OK", file=sys.stderr)
    return 0
