"""Log lines: JSON for aggregators (one object per line, structured fields), text on a
terminal, and secrets and email addresses scrubbed from both."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from gateway.fake_api import FakeEventsApi
from gateway.privacy.logs import JsonFormatter, RedactingFilter, formatter
from tests.conftest import PIXEL, wait_until
from tests.gateway_process import API_KEY, GatewayProcess, write_config

SECRET = "a-secret-token-0123456789"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def log_to() -> Iterator[Any]:
    """A logger writing through the redacting filter and the given formatter to a buffer."""
    logger = logging.getLogger("tests.logs")
    logger.propagate = False
    handlers: list[logging.Handler] = []

    def attach(chosen: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(chosen)
        handler.addFilter(RedactingFilter([SECRET]))
        logger.addHandler(handler)
        handlers.append(handler)
        return logger, stream

    yield attach
    for handler in handlers:
        logger.removeHandler(handler)


def test_a_json_line_has_the_fields_and_the_structured_extras(log_to: Any) -> None:
    logger, stream = log_to(JsonFormatter())
    extra = {"pixel": PIXEL, "event_count": 12, "tiktok_code": 40002}
    logger.warning("pixel %s: %d event(s) dead-lettered", PIXEL, 12, extra=extra)
    [line] = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "warning"
    assert record["logger"] == "tests.logs"
    assert record["message"] == f"pixel {PIXEL}: 12 event(s) dead-lettered"
    assert (record["pixel"], record["event_count"], record["tiktok_code"]) == (PIXEL, 12, 40002)
    assert abs(time.mktime(time.strptime(record["time"][:19], "%Y-%m-%dT%H:%M:%S"))
               - time.mktime(time.gmtime())) < 60  # fmt: skip
    assert record["time"].endswith("Z")


def test_uvicorn_s_colour_codes_stay_out_of_json_lines(log_to: Any) -> None:
    """uvicorn passes its message again with ANSI colours as `color_message` (issue 23)."""
    logger, stream = log_to(JsonFormatter())
    coloured = "Started server process [\x1b[36m%d\x1b[0m]"
    logger.warning("Started server process [%d]", 42, extra={"color_message": coloured})
    record = json.loads(stream.getvalue())
    assert record["message"] == "Started server process [42]"
    assert "color_message" not in record and "\x1b" not in stream.getvalue()


def test_secrets_and_emails_are_scrubbed_from_every_part_of_a_json_line(log_to: Any) -> None:
    logger, stream = log_to(JsonFormatter())
    try:
        raise RuntimeError(f"upstream said: bad token {SECRET} for alice@example.com")
    except RuntimeError:
        logger.exception(
            "request with %s failed for bob@example.org",
            SECRET,
            extra={"reason": f"token {SECRET}", "contact": "carol@example.net"},
        )
    text = stream.getvalue()
    assert SECRET not in text and "@example" not in text
    [line] = text.splitlines()  # the traceback stays inside the one object
    record = json.loads(line)
    assert record["message"] == "request with [REDACTED] failed for redacted"
    assert record["reason"] == "token [REDACTED]" and record["contact"] == "redacted"
    assert "RuntimeError: upstream said: bad token [REDACTED] for redacted" in record["exception"]


def test_echoes_of_a_secret_are_scrubbed_however_they_are_written(log_to: Any) -> None:
    """Only exact copies were (issue 21.14): a prefix, all but the last character, the
    upper-cased token, and a percent-encoded secret in an access log line (issue 21.10)."""
    logger, stream = log_to(JsonFormatter())
    token, postback = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6", "ping+tree/secret=0123456789"
    handler = logger.handlers[-1]
    handler.filters.clear()
    handler.addFilter(RedactingFilter([token, postback]))
    for echo in (token[:12], token[:-1], token.upper(), quote(postback, safe="")):
        logger.warning("upstream said %s, and GET /v1/postbacks/lms?key=%s", echo, echo)
    text = stream.getvalue()
    assert token[:10] not in text.lower() and "ping%2btree" not in text.lower(), text
    assert text.count("[REDACTED]") == 8
    logger.warning("console-replicas deliver Purchase events")  # ordinary words survive
    assert "console-replicas deliver Purchase events" in stream.getvalue()


def test_text_lines_are_scrubbed_too(log_to: Any) -> None:
    logger, stream = log_to(formatter("text"))
    logger.error("token %s of dave@example.com", SECRET)
    line = stream.getvalue().strip()
    assert line.endswith("ERROR tests.logs: token [REDACTED] of redacted")


def test_auto_writes_text_on_a_terminal_and_json_elsewhere() -> None:
    assert not isinstance(formatter("auto", Terminal()), JsonFormatter)
    assert isinstance(formatter("auto", io.StringIO()), JsonFormatter)
    assert isinstance(formatter("json", Terminal()), JsonFormatter)
    assert not isinstance(formatter("text", io.StringIO()), JsonFormatter)


def test_a_running_gateway_logs_json_lines_with_pixel_count_and_code(
    tmp_path: Path, fake_api: FakeEventsApi
) -> None:
    """`serve` and its delivery process, logging to a file (auto: JSON), with a token TikTok
    refuses: the dead-letter line says pixel, count and code, and never the token."""
    config = write_config(
        tmp_path / "gateway.toml",
        api_base=fake_api.url,
        outbox_url=f"sqlite:///{tmp_path}/outbox.sqlite3",
    )
    config.write_text(config.read_text().replace("test-token-0123456789abcdef", SECRET))
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    try:
        events = [
            {"event": "Purchase", "event_id": f"e{i}", "user": {"email": "eve@example.com"},
             "page": {"url": "https://shop.example/"}}
            for i in range(3)
        ]  # fmt: skip
        answer = httpx.post(
            f"{gateway.url}/v1/events",
            json={"events": events},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        assert answer.status_code == 202, answer.text
        wait_until(lambda: "dead-lettered" in gateway.log_path.read_text(), "no dead letter")
    finally:
        gateway.stop()
    text = gateway.log_path.read_text()
    assert SECRET not in text and "eve@example.com" not in text
    records = [json.loads(line) for line in text.splitlines()]  # every line is one object
    assert any(r["message"].startswith("gateway ready") for r in records)
    [dead] = [r for r in records if "dead-lettered" in r["message"]]
    assert dead["level"] == "error" and dead["logger"] == "gateway.delivery.dispatcher"
    assert (dead["pixel"], dead["event_count"], dead["tiktok_code"]) == (PIXEL, 3, 40105)
