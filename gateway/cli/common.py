"""What every command shares: the --config option, reading settings, and exit statuses."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.settings import Settings, load_settings

EXIT_FAILED = 1
EXIT_CONFIG = 2
Commands = Any
"""argparse's sub-parser collection (its class is private to argparse)."""


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="PATH", help="TOML config file (default: $GATEWAY_CONFIG, or none)"
    )


def settings_of(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(args.config, overrides=overrides)
