"""Logging set-up with a last line of defence: configured secrets are scrubbed from every record.

Code never logs a token on purpose; this filter makes sure a token that slips into an
exception text from a library still never reaches a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from gateway.core.secret import redact

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFilter(logging.Filter):
    """Replaces each secret with '[REDACTED]' in the final message text of a record."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        exc_text = record.exc_text
        record.msg, record.args = redact(message, self._secrets), None
        record.exc_text = redact(exc_text, self._secrets) if exc_text else exc_text
        return True


_CHATTY = ("httpx", "httpcore")


def configure_logging(level: str, secrets: Iterable[str]) -> None:
    """Root logging to stderr at `level`, every handler guarded by the redacting filter."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not root.handlers:
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(stream)
    redactor = RedactingFilter(secrets)
    for handler in root.handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(redactor)
    for name in _CHATTY:  # a line per Events API request would bury what matters
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        for own in logging.getLogger(name).handlers:
            own.addFilter(redactor)
