"""Logging set-up: text for a person at a terminal, one JSON object per line for a log
aggregator, and in both a last line of defence: secrets and email addresses scrubbed.

Code never logs a token or a raw identifier on purpose; the filter catches one that slips in
through a library's exception text. Structured fields (`extra={"pixel": …}`) are scrubbed
too and become keys of the JSON object, so an aggregator counts without parsing messages.
`log_format = "auto"` writes text when stderr is a terminal and JSON otherwise.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from typing import IO, Any

import orjson

from gateway.core.secret import redact
from gateway.privacy.scrub import scrub_emails

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER_NAME = "tiktok-gateway"
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
"""LogRecord attributes that every record has: anything else was passed in `extra`
(but uvicorn's `color_message`, its message again with terminal colour codes)."""


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class RedactingFilter(logging.Filter):
    """Replaces each secret with '[REDACTED]', and each email address with 'redacted', in a
    record's message, exception text and structured string fields."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def _clean(self, text: str) -> str:
        return scrub_emails(redact(text, self._secrets) if self._secrets else text)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = self._clean(record.getMessage()), None
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        for key, value in _fields(record).items():
            if isinstance(value, str):
                setattr(record, key, self._clean(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the record's
    structured fields, and the exception text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "time": f"{seconds}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            line.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


def formatter(log_format: str, stream: IO[str] | None = None) -> logging.Formatter:
    """The formatter `log_format` ("text", "json" or "auto") asks for on `stream`."""
    stream = stream if stream is not None else sys.stderr
    if log_format == "auto":
        is_terminal = getattr(stream, "isatty", lambda: False)()
        log_format = "text" if is_terminal else "json"
    return JsonFormatter() if log_format == "json" else logging.Formatter(_FORMAT)


_CHATTY = ("httpx", "httpcore")


def configure_logging(level: str, secrets: Iterable[str], log_format: str = "auto") -> None:
    """Root logging to stderr at `level` in `log_format`, every handler guarded by the
    redacting filter."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    own = next((h for h in root.handlers if h.get_name() == _HANDLER_NAME), None)
    if own is None and not root.handlers:
        own = logging.StreamHandler()
        own.set_name(_HANDLER_NAME)
        root.addHandler(own)
    if isinstance(own, logging.StreamHandler):
        own.setFormatter(formatter(log_format, own.stream))
    redactor = RedactingFilter(secrets)
    for handler in root.handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(redactor)
    for name in _CHATTY:  # a line per Events API request would bury what matters
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(redactor)
