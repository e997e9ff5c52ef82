"""The `import` command's surface: progress lines, summary, report file, exit statuses."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gateway.cli.progress import ImportProgress
from gateway.ingest.sources.imports.summary import Summary
from tests.conftest import TOKEN, run_cli

OFFLINE = "7301234567890123456"
NOW = int(time.time())


def setup(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[outbox]\nurl = "sqlite:///{tmp_path}/outbox.sqlite3"\n'
        f'[[pixels]]\nid = "{OFFLINE}"\nevent_source = "offline"\naccess_token = "{TOKEN}"\n'
    )
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "Mail,phone,timestamp\n"
        f"alice@example.com,,{NOW - 60}\n"
        f"bob@example.com,,{NOW - 40 * 86400}\n"
        f",+1 213 373 4253,{NOW - 60}\n"
    )
    return config, rows


def test_summary_report_and_plain_progress_lines(tmp_path: Path) -> None:
    config, rows = setup(tmp_path)
    report = tmp_path / "report.csv"
    done = run_cli(
        "import", str(rows), "--config", str(config), "--event", "Purchase",
        "--map", "Mail=email", "--report", str(report),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "progress: 3 rows" in done.stderr  # not a terminal: plain lines, no \r
    assert "\r" not in done.stderr
    assert "events stored: 2" in done.stdout and "rejected rows: 1" in done.stdout
    assert "email: 50%" in done.stdout and "phone: 50%" in done.stdout
    assert report.read_text().splitlines() == [
        "line,field,reason",
        '3,timestamp,"is older than 28 days, the oldest TikTok accepts"',
    ]
    assert "example.com" not in done.stdout + done.stderr + report.read_text()
    dry = run_cli(
        "import", str(rows), "--config", str(config), "--event", "Purchase",
        "--map", "Mail=email", "--dry-run", "--json", "--max-age-days", "28",
    )  # fmt: skip
    summary = json.loads(dry.stdout)
    assert summary["dry_run"] and summary["stored"] == 0 and summary["events"] == 2


def test_refusals_exit_non_zero_with_one_line(tmp_path: Path) -> None:
    config, rows = setup(tmp_path)
    bad_map = run_cli("import", str(rows), "--config", str(config), "--map", "Mail")
    assert bad_map.returncode == 2 and "COLUMN=FIELD" in bad_map.stderr
    no_event = run_cli("import", str(rows), "--config", str(config), "--map", "Mail=email")
    assert no_event.returncode == 1 and "--event" in no_event.stderr
    missing = run_cli("import", str(tmp_path / "nope.csv"), "--config", str(config))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    (tmp_path / "latin1.csv").write_bytes(
        "email,timestamp\nj\xf6rg@example.com,1\n".encode("latin-1")
    )
    latin = run_cli("import", str(tmp_path / "latin1.csv"), "--config", str(config))
    assert latin.returncode == 1 and "UTF-8" in latin.stderr


class Terminal:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_a_terminal_gets_a_bar_redrawn_in_place() -> None:
    screen = Terminal()
    progress = ImportProgress(screen, total_bytes=1000, tty=True)  # type: ignore[arg-type]
    progress(Summary(rows=500, elapsed_seconds=2.0), 250)
    progress.close()
    assert screen.text.startswith("\r[######..................] 500 rows, 250 rows/s, ETA 6 s")
    assert screen.text.endswith("\n")
