"""`import PATH`: offline and CRM conversions from a CSV, TSV or JSON Lines file (or `-`).

Runs beside a gateway (the outbox opened as operator commands open it): rows go into the
outbox in chunks and the gateway's dispatcher delivers them like any other event.
Exit status 0 when the file was read to its end (rejected rows are in the summary and the
report), 1 when it could not be read or stored (re-run with --resume).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import IO, Any, NoReturn

from gateway.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    Commands,
    add_config,
    command,
    settings_of,
)
from gateway.cli.progress import ImportProgress
from gateway.core.errors import EventError, OutboxUnavailable
from gateway.core.heap import settle_heap
from gateway.ingest.leads import lead_memory
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.sources.imports.importer import Importer
from gateway.ingest.sources.imports.options import PARAMS, ImportOptions
from gateway.ingest.sources.imports.readers import FORMATS, UnreadableFile, open_binary
from gateway.ingest.sources.imports.summary import ReportWriter, Summary
from gateway.settings import Settings
from gateway.settings.sections import MAX_IMPORT_AGE_DAYS
from gateway.storage.backend import open_backend
from gateway.storage.leads import context_key_shared
from gateway.telemetry.metrics import Metrics


def register(commands: Commands) -> None:
    parser = command(
        commands,
        "import",
        "import offline / CRM conversions from a CSV, TSV or JSON Lines file",
        description="Rows are stored in the outbox and delivered by the running gateway. "
        "Exit status 0 when the file was read to its end (rejected rows are in the summary), "
        "1 when it could not be read or stored (re-run with --resume).",
    )
    add_config(parser)
    parser.add_argument("path", metavar="PATH", help="the file (gzip welcome), or - for stdin")
    parser.add_argument("--pixel", metavar="ID", help="the event set (default: the only one)")
    parser.add_argument("--event", metavar="NAME", help="event name when there is no event column")
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="COLUMN=FIELD",
        help="read COLUMN as FIELD (repeatable), e.g. --map 'E-Mail=email'",
    )
    parser.add_argument("--currency", help="currency of rows without one (default: USD)")
    parser.add_argument("--limited-data-use", action="store_true", help="web event sets only")
    parser.add_argument(
        "--test-event-code", metavar="CODE", help="code from Events Manager > Test events"
    )
    parser.add_argument(
        "--group-by",
        choices=["order_id"],
        help="rows sharing an order id and event become one event (Σ price × quantity)",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="auto", help="the file's format (default: by its name)"
    )
    parser.add_argument(
        "--max-age-days",
        type=int,
        metavar="DAYS",
        help=f"rows older than this are rejected (default: {MAX_IMPORT_AGE_DAYS})",
    )
    parser.add_argument("--dry-run", action="store_true", help="everything but storing")
    parser.add_argument("--report", metavar="PATH", help="write one line per rejected row")
    parser.add_argument(
        "--resume", action="store_true", help="skip the chunks an interrupted run stored"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=default_jobs(),
        metavar="N",
        help=f"processes parsing rows (default: one per core, here {default_jobs()})",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run_import)


def default_jobs() -> int:
    """One parsing process per core this process may run on (at most 8: past that, reading
    and storing in the importing process are the limit)."""
    return max(1, min(8, len(os.sched_getaffinity(0))))


def options_of(args: argparse.Namespace, settings: Settings) -> ImportOptions:
    """The upload's checks (`ImportOptions.from_params`), answered as usage errors."""
    if not 1 <= args.jobs <= 64:
        _usage("--jobs must be from 1 to 64")
    given = vars(args)
    params = {name: given[name] for name in PARAMS}
    try:
        return ImportOptions.from_params(params, settings, jobs=args.jobs)
    except EventError as exc:
        _usage(f"--{exc.field.replace('_', '-')} {exc.message}")


async def import_file(
    settings: Settings,
    options: ImportOptions,
    binary: IO[bytes],
    *,
    report: ReportWriter | None = None,
    progress: Callable[[Summary, int | None], None] | None = None,
    position: Callable[[], int | None] = lambda: None,
) -> Summary:
    backend = open_backend(settings.outbox, owner=False)
    leads, unread = None, _context_unread(settings, options)
    try:
        if not options.dry_run or options.resume:
            await backend.outbox.open()
        if unread is None:
            leads = lead_memory(settings, backend)
            await leads.store.open()
        pipeline = Pipeline(settings, backend.outbox, Metrics())
        importer = Importer(
            pipeline,
            options,
            report=report.write if report is not None else None,
            progress=(lambda s: progress(s, position())) if progress is not None else None,
            leads=leads,
        )
        importer.summary.context_unread = unread
        return await importer.run(binary)
    finally:
        if leads is not None:
            await leads.store.close()
        await backend.close()


def _context_unread(settings: Settings, options: ImportOptions) -> str | None:
    """Why this command cannot read the gateway's lead-context store, or None."""
    if options.dry_run:
        return "a dry run does not open the outbox"
    if not settings.postbacks.context_keys:
        return "postbacks.context_keys is empty"
    if not context_key_shared(settings):
        return (
            "its keys are hashed with a key the gateway made at start; set "
            "postbacks.context_secrets (or cookies.secrets) to share it"
        )
    return None


def run_import(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    options = options_of(args, settings)
    # a million rows allocate tens of millions of objects, and each full collection would
    # walk the static heap (phone metadata, modules) again: ~7 % of an import's CPU
    settle_heap()
    try:
        binary = open_binary(args.path)
    except OSError as exc:
        print(f"cannot read {args.path}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    total = None if args.path == "-" else os.path.getsize(args.path)
    raw = getattr(binary, "fileobj", None) or binary  # the compressed file's own position
    progress = ImportProgress(sys.stderr, total_bytes=total, tty=sys.stderr.isatty())
    with contextlib.ExitStack() as stack:
        stack.enter_context(binary)
        report = None
        if args.report:
            stream = stack.enter_context(open(args.report, "w", newline="", encoding="utf-8"))
            report = ReportWriter(stream)
        try:
            summary = asyncio.run(
                import_file(
                    settings,
                    options,
                    binary,
                    report=report,
                    progress=progress,
                    position=lambda: _tell(raw),
                )
            )
        except UnreadableFile as exc:
            progress.close()
            print(f"cannot import {args.path}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:
            progress.close()
            print("interrupted: run the same command with --resume to go on", file=sys.stderr)
            return 130
        except OutboxUnavailable as exc:
            progress.close()
            print(f"outbox unavailable: {exc}", file=sys.stderr)
            print("once it is fixed, run the same command with --resume", file=sys.stderr)
            return EXIT_FAILED
        progress.close()
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        print(summary.to_text())
    return 0


def _usage(problem: str) -> NoReturn:
    print(f"tiktok-gateway import: {problem}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG)


def _tell(stream: Any) -> int | None:
    try:
        return int(stream.tell())
    except (OSError, ValueError, AttributeError):
        return None
