"""`LiveSettings` on its own (settings/live.py): what a reload takes, and when the watcher
reloads. Each poll is called here (`poll()`), so each test says exactly which look at the
files it means; `test_reload.py` runs the same watcher in a served gateway."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.settings import Settings, load_settings
from gateway.settings.live import LiveSettings

pytestmark = pytest.mark.anyio
PIXEL, NEW_PIXEL = "CLIVEPIXEL0001", "CLIVEPIXEL0002"


class Files:
    """A config file naming its token files, rewritten by the test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "gateway.toml"
        (root / "token").write_text("token-0123456789abcdef\n")

    def write(self, *pixels: str, outbox: str = "outbox.sqlite3") -> None:
        tables = [
            f'[[pixels]]\nid = "{pixel}"\naccess_token = "file:{self.root / pixel}"\n'
            if pixel != PIXEL
            else f'[[pixels]]\nid = "{PIXEL}"\naccess_token = "file:{self.root / "token"}"\n'
            for pixel in pixels
        ]
        head = (
            f'api_base = "https://api.invalid"\n[outbox]\nurl = "sqlite:///{self.root}/{outbox}"\n'
        )
        self.config.write_text(head + "\n".join(tables))

    def load(self) -> Settings:
        return load_settings(self.config, {})

    def live(self) -> LiveSettings:
        return LiveSettings(self.load(), load=self.load, config_file=self.config)


@pytest.fixture
def files(tmp_path: Path) -> Files:
    made = Files(tmp_path)
    made.write(PIXEL)
    return made


def pixels(live: LiveSettings) -> list[str]:
    return [p.id for p in live.current.pixels]


async def test_a_file_changed_while_the_gateway_starts_is_reloaded(files: Files) -> None:
    live = files.live()  # the files as `serve` read them
    (files.root / "token").write_text("rotated-0123456789abcdef\n")  # before the watcher runs
    assert await live.poll()
    assert live.current.pixels[0].access_token.reveal() == "rotated-0123456789abcdef"


async def test_a_refused_file_is_applied_once_the_secret_it_names_appears(
    files: Files, caplog: pytest.LogCaptureFixture
) -> None:
    """Kubernetes syncs the ConfigMap and the Secret apart: the config may name a token
    file that arrives a minute later."""
    live = files.live()
    files.write(PIXEL, NEW_PIXEL)  # the new pixel's token file is not there yet
    assert not await live.poll()
    assert not await live.poll()  # tried again, refused again for the same reason
    assert live.refused == 1
    (files.root / NEW_PIXEL).write_text("new-token-0123456789abcdef\n")
    assert await live.poll()
    assert pixels(live) == [PIXEL, NEW_PIXEL]
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR
    assert not await live.poll()  # applied: nothing more to do until a file changes


async def test_a_refusal_for_a_new_reason_is_logged_and_counted_again(files: Files) -> None:
    live = files.live()
    files.write(PIXEL, NEW_PIXEL)
    assert not await live.poll()
    files.config.write_text("[[pixels]\nbroken")
    assert not await live.poll()
    assert live.refused == 2


async def test_a_reload_by_sighup_leaves_the_watcher_nothing_to_reload(files: Files) -> None:
    live = files.live()
    (files.root / "token").write_text("rotated-0123456789abcdef\n")
    assert await live.reload()  # as SIGHUP does
    assert not await live.poll()
    assert live.reloads == 1


async def test_a_change_that_needs_a_restart_is_not_taken_and_reported_again(
    files: Files, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.settings.live")
    live = files.live()
    started = live.current
    files.write(PIXEL, outbox="elsewhere.sqlite3")
    assert await live.reload()
    assert live.current.outbox == started.outbox  # still the one this gateway uses
    assert live.current.api_base == started.api_base
    files.write(PIXEL, NEW_PIXEL, outbox="elsewhere.sqlite3")
    (files.root / NEW_PIXEL).write_text("new-token-0123456789abcdef\n")
    assert await live.reload()
    assert pixels(live) == [PIXEL, NEW_PIXEL] and live.current.outbox == started.outbox
    reloaded = [r.getMessage() for r in caplog.records if "reloaded" in r.getMessage()]
    assert len(reloaded) == 2
    assert all(m.endswith("; outbox changed and need a restart") for m in reloaded), reloaded


async def test_a_sighup_while_the_gateway_stops_reloads_nothing(files: Files) -> None:
    live = files.live()
    await live.stop()
    live.trigger()
    assert live._tasks == set()
