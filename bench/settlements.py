"""Settlements from the delivery process to the server: the pipe vs a table in the outbox.

    .venv/bin/python bench/settlements.py [--settlements 2000] [--batch 1000]

Each settled batch is reported once (`delivery/settlement.py`). This compares the way it
travels today, a pipe (`SettlementChannel` in the delivery process, `read_settlements` in
the server), with what "written where the console reads it" would be on the embedded
backend: an INSERT committed into the outbox's own SQLite file (WAL, the outbox's default
`synchronous=FULL`) by the delivery process, polled by rowid by the server. Same run, same
settlements; it prints CPU and wall time per settlement of writer and reader together.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sqlite3
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.delivery.settlement import Settlement, SettlementChannel, read_settlements


class Count:
    def __init__(self) -> None:
        self.seen = 0

    def settled(self, settlement: Settlement) -> None:
        self.seen += len(settlement.events)


def settlements(count: int, batch: int) -> list[Settlement]:
    now = time.time()
    return [
        Settlement(
            "delivered",
            "CBENCHPIXEL001",
            [("Purchase", f"order-{n}-{i}") for i in range(batch)],
            now,
            request=n,
            code=0,
            message="OK",
            request_id=f"2026120600000{n}",
        )
        for n in range(count)
    ]


def _read_pipe(connection: Connection, into: Count) -> None:
    while read_settlements(connection, into):
        connection.poll(1.0)


def through_pipe(batches: list[Settlement]) -> tuple[float, float]:
    reader, writer = multiprocessing.Pipe(duplex=False)
    into = Count()
    thread = threading.Thread(target=_read_pipe, args=(reader, into))

    async def send() -> None:
        channel = SettlementChannel(writer)
        channel.start()
        for settlement in batches:  # one at a time, as a dispatcher settles ~50 batches/s
            channel.settled(settlement)
            await channel._drained.wait()
        await channel.close()

    cpu, wall = time.process_time(), time.perf_counter()
    thread.start()
    asyncio.run(send())
    thread.join()
    assert into.seen == sum(len(s.events) for s in batches), "the pipe dropped settlements"
    return time.process_time() - cpu, time.perf_counter() - wall


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    return connection


def _read_table(path: Path, expected: int, into: Count) -> None:
    connection = _connect(path)
    last = 0
    while into.seen < expected:
        rows = connection.execute(
            "SELECT id, body FROM settlements WHERE id > ? ORDER BY id", (last,)
        ).fetchall()
        for last, body in rows:  # noqa: B007 (the last id read is the cursor)
            into.settled(Settlement.from_json(orjson.loads(body)))
        if not rows:
            time.sleep(0.001)
    connection.close()


def through_table(batches: list[Settlement], directory: Path) -> tuple[float, float]:
    path = directory / "outbox.sqlite3"
    writer = _connect(path)
    writer.execute("CREATE TABLE settlements (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    into = Count()
    expected = sum(len(s.events) for s in batches)
    thread = threading.Thread(target=_read_table, args=(path, expected, into))
    cpu, wall = time.process_time(), time.perf_counter()
    thread.start()
    for settlement in batches:
        writer.execute(
            "INSERT INTO settlements (body) VALUES (?)", (orjson.dumps(settlement.to_json()),)
        )
    thread.join()
    writer.close()
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settlements", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1000, help="events per settlement")
    args = parser.parse_args()
    batches = settlements(args.settlements, args.batch)
    with tempfile.TemporaryDirectory() as directory:
        results = {
            "pipe (today)": through_pipe(batches),
            "table in the outbox's SQLite file": through_table(batches, Path(directory)),
        }
    base_cpu = results["pipe (today)"][0]
    print(f"{args.settlements} settlements of {args.batch} events each")
    for name, (cpu, wall) in results.items():
        per = 1e6 / args.settlements
        print(
            f"  {name:36} CPU {cpu * per:8.1f} µs, wall {wall * per:8.1f} µs per settlement"
            f"  ({cpu / base_cpu:.2f}× the pipe's CPU)"
        )


if __name__ == "__main__":
    main()
