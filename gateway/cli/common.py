"""What every command shares: the --config option, reading settings, exit statuses, and the
one line a command prints when the outbox cannot be used (docs/commands.md lists them)."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from gateway.settings import Settings, load_settings

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_STORAGE = 3
"""The outbox named by `[outbox] url` cannot be opened or used (path, lock, Redis, version)."""
OUTBOX_SETTING = "[outbox] url (GATEWAY_OUTBOX_URL)"
Commands = Any
"""argparse's sub-parser collection (its class is private to argparse)."""


def command(commands: Commands, name: str, summary: str, **options: Any) -> Any:
    """A sub-command whose `--help` starts with its summary (the listing's line) and, when
    given, a longer `description`."""
    paragraphs = [f"{summary[0].upper()}{summary[1:]}.", options.pop("description", None)]
    text = "\n\n".join(textwrap.fill(p, 79) for p in paragraphs if p)
    return commands.add_parser(
        name,
        help=summary,
        description=text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **options,
    )


def add_config(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """`nested`: on a sub-command of a command that has --config too (given before or after
    the sub-command's name, it is read either way)."""
    default: Any = argparse.SUPPRESS if nested else None
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=default,
        help="TOML config file (default: $GATEWAY_CONFIG, or none)",
    )


def settings_of(args: argparse.Namespace, *, secrets: bool = True, **overrides: Any) -> Settings:
    """`secrets=False`: for commands that only read or tidy the outbox; a token or password
    whose variable or file is missing here is not a problem for them."""
    return load_settings(args.config, overrides=overrides, secrets=secrets)


def storage_failure(exc: Exception) -> str:
    """The one line for an outbox that cannot be used: the setting, then the cause."""
    return f"{OUTBOX_SETTING}: {exc}"
