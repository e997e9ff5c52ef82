"""The configuration a running gateway uses now, reloadable without a restart.

`reload()` reads the file again (on SIGHUP, or when `watch()` sees the file or a `file:`
secret change) and validates it whole; only a configuration with no problem replaces the
running one. A bad file changes nothing and is logged in one line with its problems.

A good one is applied in two steps, so nothing is accepted that cannot be delivered:

1. `prepare` hooks are awaited first: delivery (in its own process) learns the new tokens
   and pixels before anything is accepted for them;
2. then every `on_reload` listener takes the new settings in one go, with no await between
   them: each swaps one reference (a pixel table, a rule set), so a request sees the old
   configuration or the new, never a mix.

What is reloaded: the pixels (ids, tokens, origins, test codes, consent) and the postback
sources and rules (`RELOADED`). The rest (listeners, the outbox, limits, delivery's pace,
the lead context) is built once at start; a change to it is logged as needing a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path

from gateway.core.errors import ConfigError
from gateway.settings.model import Settings

log = logging.getLogger(__name__)
Listener = Callable[[Settings], None]
Prepare = Callable[[Settings], Awaitable[None]]
RELOADED = ("pixels", "postbacks.sources", "postbacks.rules", "postbacks.max_body_bytes")
"""What the listeners apply (a section, or a section's key); a change elsewhere — the lead
context's and the postback log's settings too — needs a restart."""
Fingerprint = dict[str, str]


class LiveSettings:
    def __init__(
        self,
        settings: Settings,
        *,
        load: Callable[[], Settings] | None = None,
        config_file: str | Path | None = None,
    ) -> None:
        """`load` reads the configuration again (None: this gateway cannot reload);
        `config_file` is watched beside the `file:` secrets (see `watch`)."""
        self.current = settings
        self._load = load
        self._config_file = str(config_file) if config_file is not None else None
        self._prepare: list[Prepare] = []
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[object]] = set()
        self.reloads = 0
        self.refused = 0

    @property
    def can_reload(self) -> bool:
        return self._load is not None

    def prepare(self, hook: Prepare) -> None:
        """Await `hook` with each new configuration before any listener applies it."""
        self._prepare.append(hook)

    def on_reload(self, listener: Listener) -> None:
        """Call `listener` with each new configuration (quick; it must not raise)."""
        self._listeners.append(listener)

    def start(self, every: float) -> None:
        """Watch the files every `every` seconds (0: no watching; SIGHUP still reloads)."""
        if every > 0 and self._load is not None:
            self._spawn(self.watch(every), "config-watch")

    def trigger(self) -> None:
        """Reload soon (a signal handler cannot await); `stop()` ends it if still running."""
        self._spawn(self._reload_logged(), "config-reload")

    async def stop(self) -> None:
        """Stop watching and any reload under way; idempotent. A reload is cancelled before
        it applies anything, or has applied all of it (its listeners do not await)."""
        tasks = list(self._tasks)  # each leaves the set as it ends
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _spawn(self, work: Coroutine[object, object, object], name: str) -> None:
        task: asyncio.Task[object] = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_logged(self) -> bool:
        try:
            return await self.reload()
        except Exception:  # a bug in a listener: logged, the gateway keeps running
            log.exception("configuration reload failed")
            return False

    async def reload(self) -> bool:
        """Read, validate and apply the configuration; False (old one kept) on any problem."""
        if self._load is None:
            log.warning("configuration reload: this gateway was not started from a file")
            return False
        async with self._lock:  # SIGHUP and the watcher: one reload at a time
            try:
                settings = await asyncio.to_thread(self._load)  # files, off the event loop
            except ConfigError as exc:
                self.refused += 1
                log.error("configuration reload refused, keeping the running one: %s", exc)
                return False
            needs_restart = _not_reloaded(self.current, settings)
            for hook in self._prepare:
                await hook(settings)
            self.current = settings
            for listener in self._listeners:  # no await in between: all or none seen
                listener(settings)
            self.reloads += 1
        log.info(
            "configuration reloaded: %s applied%s",
            ", ".join(RELOADED),
            f"; {', '.join(needs_restart)} changed and need a restart" if needs_restart else "",
        )
        return True

    def watched(self) -> list[str]:
        """The files whose change triggers a reload: the config file, every `file:` secret."""
        files = [self._config_file] if self._config_file else []
        return list(dict.fromkeys([*files, *self.current.secret_files()]))

    async def watch(self, every: float) -> None:
        """Reload whenever a watched file's content changes; runs until cancelled.

        Contents are compared (as digests, kept in memory only), not modification times:
        Kubernetes updates a mounted Secret or ConfigMap by pointing a `..data` symlink at a
        new directory, which leaves the path's own times alone. A change that is refused is
        logged once, then waited out until the file changes again.
        """
        seen = await asyncio.to_thread(_fingerprint, self.watched())
        while True:
            await asyncio.sleep(every)
            now = await asyncio.to_thread(_fingerprint, list(seen))
            if now == seen:
                continue
            changed = [path for path in now if now[path] != seen.get(path)]
            log.info("configuration: %s changed; reloading", ", ".join(changed))
            await self._reload_logged()
            files = self.watched()  # a reloaded file may name other secret files
            added = await asyncio.to_thread(_fingerprint, [f for f in files if f not in now])
            seen = {**{f: now[f] for f in files if f in now}, **added}


def _not_reloaded(old: Settings, new: Settings) -> list[str]:
    """The keys that changed but are not in RELOADED: `outbox`, `postbacks.context_days`."""
    changed = []
    for field in dataclasses.fields(Settings):
        name = field.name
        before, after = getattr(old, name), getattr(new, name)
        if name in RELOADED or before == after:
            continue
        keys = [k.split(".", 1)[1] for k in RELOADED if k.startswith(f"{name}.")]
        if not keys:
            changed.append(name)
            continue
        for inner in dataclasses.fields(before):
            if inner.name not in keys and getattr(before, inner.name) != getattr(after, inner.name):
                changed.append(f"{name}.{inner.name}")
    return changed


def _fingerprint(paths: Sequence[str]) -> Fingerprint:
    """Each file's content digest (through symlinks), or why it cannot be read."""
    found: Fingerprint = {}
    for path in paths:
        try:
            found[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError as exc:
            found[path] = f"unreadable: {exc.strerror}"
    return found
