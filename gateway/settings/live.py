"""The configuration a running gateway uses now, reloadable without a restart.

`reload()` reads the file again (on SIGHUP) and validates it whole; only a configuration
with no problem replaces the running one, and then every part that registered with
`on_reload` takes its new settings at once — each swaps one reference, so a request sees
the old configuration or the new, never a mix. A bad file changes nothing and is logged in
one line with its problems.

What is reloaded today: the postback sources and rules. Parts built once at start (pixels
and their tokens, listeners, the outbox) keep their start-up values until they register a
listener of their own; a change to them is logged as needing a restart.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from gateway.core.errors import ConfigError
from gateway.settings.model import Settings

log = logging.getLogger(__name__)
Listener = Callable[[Settings], None]
RELOADED = ("postbacks",)
"""The sections whose listeners apply a reload; a change elsewhere needs a restart."""


class LiveSettings:
    def __init__(self, settings: Settings, *, load: Callable[[], Settings] | None = None) -> None:
        """`load` reads the configuration again (None: this gateway cannot reload)."""
        self.current = settings
        self._load = load
        self._listeners: list[Listener] = []
        self.reloads = 0
        self.refused = 0

    def on_reload(self, listener: Listener) -> None:
        """Call `listener` with each new configuration (quick; it must not raise)."""
        self._listeners.append(listener)

    def reload(self) -> bool:
        """Read, validate and apply the configuration; False (old one kept) on any problem."""
        if self._load is None:
            log.warning("configuration reload: this gateway was not started from a file")
            return False
        try:
            settings = self._load()
        except ConfigError as exc:
            self.refused += 1
            log.error("configuration reload refused, keeping the running one: %s", exc)
            return False
        needs_restart = [
            field.name
            for field in dataclasses.fields(Settings)
            if field.name not in RELOADED
            and getattr(settings, field.name) != getattr(self.current, field.name)
        ]
        self.current = settings
        for listener in self._listeners:
            listener(settings)
        self.reloads += 1
        log.info(
            "configuration reloaded: %s applied%s",
            ", ".join(RELOADED),
            f"; {', '.join(needs_restart)} changed and need a restart" if needs_restart else "",
        )
        return True
