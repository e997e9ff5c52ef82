"""Helpers shared by the benchmarks: child processes on loopback, readiness, memory readings."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

TOKEN = "bench-token"
PIXEL = "CBENCHPIXEL001"
API_KEY = "bench-api-key-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


@contextlib.contextmanager
def child(
    args: list[str], ready_url: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A `python -m gateway …` child process, stopped with SIGTERM (then SIGKILL) on exit."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
    try:
        wait_ready(ready_url, process)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tree_rss_mb(pid: int) -> float:
    """Current RSS in MB of a process and all its descendants (the gateway, its delivery
    process and multiprocessing's resource tracker)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            total += rss_mb(current)[0]
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(p) for p in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue  # exited meanwhile
    return total


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    """One wrk run: requests per second, non-2xx answers, p50 and p99 in milliseconds."""
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result = {"rate": rate, "non_2xx": float(errors.group(1)) if errors else 0.0}
    for percentile in ("50", "99"):
        match = re.search(rf"\s{percentile}%\s+([\d.]+)(us|ms|s)", output)
        if match:
            value, unit = float(match.group(1)), match.group(2)
            result[f"p{percentile}_ms"] = (
                value / 1000 if unit == "us" else value * (1000 if unit == "s" else 1)
            )
    return result
