"""Import benchmark: `tiktok-gateway import` against the bare loop it cannot beat, same run.

    .venv/bin/python bench/import.py [--rows 1000000]

1. A CSV of `--rows` offline purchases is generated, with an email and a phone on every row
   (half of the phones national, half international, as CRM exports mix them).
2. Bare loop: read that CSV with the csv module and hash each row's email and phone the
   way the gateway must (trim, lowercase, SHA-256; libphonenumber to E.164, SHA-256) —
   the limit for any Python importer that normalises as TikTok requires.
3. The importer, in a child process of its own, imports the same file into a fresh SQLite
   outbox (synchronous FULL, one transaction per 1,000 rows) through the real pipeline;
   its resident memory is read after every chunk.
Target: the importer at ≥ 60 % of the bare loop's rows/s, and the same peak memory in the
first and the last 10 % of the file. Figures are printed, and also as JSON with --json.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import tree_rss_mb

OFFLINE = "7301234567890123456"
NOW = int(time.time())


def generate(path: Path, rows: int) -> None:
    with open(path, "w", newline="") as out:
        out.write("email,phone,event,timestamp,value,currency,order_id\n")
        for n in range(rows):
            phone = f"+1 213 555 {n % 10000:04d}" if n % 2 else f"(312) 555-{n % 10000:04d}"
            out.write(
                f"Customer{n}@Example.com,{phone},Purchase,{NOW - 3600 - n % 86400},"
                f"{n % 97}.5,USD,order-{n}\n"
            )


def bare_loop(path: Path) -> float:
    """Rows per second of reading the CSV and hashing email and phone, nothing else."""
    from gateway.core.normalize import hash_email, hash_phone

    started = time.perf_counter()
    rows = 0
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        next(reader)
        for row in reader:
            hash_email(row[0])
            hash_phone(row[1], "US")
            rows += 1
    return rows / (time.perf_counter() - started)


def durable_floor(path: Path, outbox: Path) -> float:
    """Rows per second of the least a durable importer must add to the bare loop: each row
    becomes a minimal TikTok event (time, value, currency, order id, an event id hashed from
    them) serialised as the outbox stores it, and every 1,000 rows are one SQLite transaction
    in the outbox's own schema and settings (WAL, synchronous FULL). No validation, no
    scrubbing, no report, no resume: a floor, not an importer."""
    import hashlib
    import sqlite3

    import orjson

    from gateway.core.normalize import hash_email, hash_phone
    from gateway.storage.outbox.sqlite import _INSERT_JSON
    from gateway.storage.outbox.sqlite_migration import SCHEMA

    conn = sqlite3.connect(outbox, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    started = time.perf_counter()
    rows = 0
    chunk: list[list[Any]] = []

    def store() -> None:
        conn.execute("BEGIN")
        conn.execute(_INSERT_JSON, (orjson.dumps(chunk).decode(),))
        conn.execute("COMMIT")
        chunk.clear()

    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.reader(stream)
        next(reader)
        now = time.time()
        for email, phone, event, stamp, value, currency, order_id in reader:
            user = {"email": [hash_email(email)], "phone": [hash_phone(phone, "US")]}
            event_time = int(stamp)
            event_id = hashlib.sha256(orjson.dumps([event, event_time, order_id])).hexdigest()
            data = {
                "event": event,
                "event_time": event_time,
                "event_id": event_id[:32],
                "user": user,
                "properties": {"value": float(value), "currency": currency, "order_id": order_id},
            }
            chunk.append(
                [OFFLINE, "offline", None, event, event_id[:32], event_time,
                 orjson.dumps(data).decode(), now]
            )  # fmt: skip
            rows += 1
            if len(chunk) == 1000:
                store()
        if chunk:
            store()
    conn.close()
    return rows / (time.perf_counter() - started)


def child_import(path: Path, outbox: Path, jobs: int = 1) -> dict[str, object]:
    """Import in this (child) process with `jobs` parsing processes; RSS (this process and
    its workers) sampled after each chunk, CPU time of all of them."""
    from gateway.cli.import_file import import_file
    from gateway.core.heap import settle_heap
    from gateway.ingest.sources.imports.options import ImportOptions
    from gateway.ingest.sources.imports.readers import open_binary
    from gateway.settings import parse_settings

    settings = parse_settings(
        {
            "pixels": [{"id": OFFLINE, "access_token": "t", "event_source": "offline"}],
            "outbox": {"url": f"sqlite:///{outbox}"},
        },
        {},
    )
    samples: list[tuple[int, float]] = []

    class Sampler:  # the progress hook: called after every chunk
        def __call__(self, summary: Any, position: object = None) -> None:
            samples.append((summary.rows, tree_rss_mb(os.getpid())))

    settle_heap()  # as the command does before it reads
    started, cpu = time.perf_counter(), _cpu_seconds()
    with open_binary(str(path)) as binary:
        summary = asyncio.run(
            import_file(settings, ImportOptions(pixel=OFFLINE, jobs=jobs), binary,
                        progress=Sampler(), position=lambda: None)
        )  # fmt: skip
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu  # the workers have exited: their time is counted
    total = summary.rows
    # a small file has one chunk: then its one sample stands for both ends
    first = [rss for rows, rss in samples if rows <= total * 0.1] or [samples[0][1]]
    last = [rss for rows, rss in samples if rows >= total * 0.9] or [samples[-1][1]]
    return {
        "rows": total,
        "events": summary.events,
        "rows_per_second": total / elapsed,
        "cpu_us_per_row": cpu / total * 1e6,
        "peak_rss_mb_first_10pct": max(first),
        "peak_rss_mb_last_10pct": max(last),
        "peak_rss_mb": max(rss for _, rss in samples),
    }


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have exited."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    from gateway.cli.import_file import default_jobs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="as the command's")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("CSV", "OUTBOX", "JOBS"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.child:
        csv_path, outbox, jobs = args.child
        print(json.dumps(child_import(Path(csv_path), Path(outbox), int(jobs))))
        return
    runs: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "orders.csv"
        generate(path, args.rows)
        size_mb = path.stat().st_size / 1_048_576
        bare = bare_loop(path)
        floor = durable_floor(path, Path(tmp) / "floor.sqlite3")
        for jobs in dict.fromkeys([1, args.jobs]):  # one process, then as the command runs
            child = subprocess.run(
                [sys.executable, __file__, "--child", str(path),
                 str(Path(tmp) / f"outbox-{jobs}.sqlite3"), str(jobs)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            runs[jobs] = json.loads(child.stdout)
        bare_after = bare_loop(path)  # the machine is shared: the bare loop before and after
    bare_mean = (bare + bare_after) / 2
    result: dict[str, Any] = {
        "rows": args.rows,
        "file_mb": round(size_mb, 1),
        "cores": len(os.sched_getaffinity(0)),
        "bare_rows_per_second": round(bare_mean),
        "bare_runs": [round(bare), round(bare_after)],
        "bare_us_per_row": round(1e6 / bare_mean, 1),
        "durable_floor_rows_per_second": round(floor),
        "durable_floor_ratio": round(floor / bare_mean, 3),
        "imports": [
            {
                "jobs": jobs,
                "rows_per_second": round(run["rows_per_second"]),
                "ratio": round(run["rows_per_second"] / bare_mean, 3),
                "cpu_us_per_row": round(run["cpu_us_per_row"], 1),
                "events_stored": run["events"],
                "peak_rss_mb_first_10pct": round(run["peak_rss_mb_first_10pct"], 1),
                "peak_rss_mb_last_10pct": round(run["peak_rss_mb_last_10pct"], 1),
                "peak_rss_mb": round(run["peak_rss_mb"], 1),
            }
            for jobs, run in runs.items()
        ],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"file: {args.rows:,} rows, {size_mb:.1f} MB; {result['cores']} cores")
    print(f"bare loop (read + hash email and phone): {bare_mean:,.0f} rows/s "
          f"(runs: {bare:,.0f}, {bare_after:,.0f})")  # fmt: skip
    print(f"durable floor (+ minimal event, SQLite): {floor:,.0f} rows/s "
          f"= {result['durable_floor_ratio']:.0%} of the bare loop")  # fmt: skip
    for run in result["imports"]:
        first, last = run["peak_rss_mb_first_10pct"], run["peak_rss_mb_last_10pct"]
        print(f"import --jobs {run['jobs']} into the SQLite outbox: {run['rows_per_second']:,.0f} "
              f"rows/s = {run['ratio']:.0%} of the bare loop (target ≥ 60 %); "
              f"CPU {run['cpu_us_per_row']} µs a row; RSS with its workers: "
              f"first 10 % {first} MB, last 10 % {last} MB")  # fmt: skip


if __name__ == "__main__":
    main()
