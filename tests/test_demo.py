"""`tiktok-gateway demo`: one command gives a shop page, the gateway, a fake TikTok, a console."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import free_port, wait_for_http


def start_demo(port: int, stderr: int) -> subprocess.Popen[str]:
    """`tiktok-gateway demo` in a real child process, without the caller's gateway settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "GATEWAY_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
    )


@pytest.fixture
def demo() -> Iterator[dict[str, str]]:
    """The demo in a real child process; yields what it printed, by label."""
    with start_demo(free_port(), subprocess.DEVNULL) as process:
        printed: dict[str, str] = {}
        try:
            assert process.stdout is not None
            while "admin password" not in printed:
                line = process.stdout.readline()
                assert line, "the demo ended before printing its password"
                label, _, value = line.rstrip().partition("  ")
                if value:
                    printed[label.strip()] = value.strip()
            yield printed
        finally:
            process.terminate()
            process.wait(20)


def test_demo_prints_the_console_and_a_password_that_opens_it(demo: dict[str, str]) -> None:
    shop = wait_for_http(demo["demo shop"])
    assert shop.status_code == 200 and "/gw.js" in shop.text and "Purchase" in shop.text
    with httpx.Client(timeout=10) as client:
        login = client.post(demo["console"] + "/login", data={"password": demo["admin password"]})
        assert login.status_code == 303
        page = client.get(demo["console"])
        assert page.status_code == 200 and 'id="events"' in page.text


def test_ctrl_c_stops_the_demo_in_one_line_without_warnings() -> None:
    """Ctrl-C ends the demo with exit 0 and no traceback; its token lives in no file, so
    nothing warns about one (issue 23)."""
    port = free_port()
    with start_demo(port, subprocess.STDOUT) as process:
        assert process.stdout is not None
        lines: list[str] = []
        while not any(line.startswith("Ctrl-C stops everything") for line in lines):
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        wait_for_http(f"http://127.0.0.1:{port}/healthz")
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=20)
    output = "".join(lines) + rest
    assert process.returncode == 0, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert "written in the file" not in output, output
    assert rest.strip().splitlines()[-1] == "demo stopped.", output
