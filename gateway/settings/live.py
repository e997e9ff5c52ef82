"""The configuration a running gateway uses now, reloadable without a restart.

`reload()` (SIGHUP, or `watch()` seeing the file or a `file:` secret change) validates the
file whole; a bad one changes nothing and is logged in one line. A good one is applied in two
steps: `prepare` hooks are awaited first (delivery learns new tokens and pixels before anything
is accepted for them), then every `on_reload` listener swaps its reference with no await in
between, so a request sees the old or the new, never a mix. Only the `RELOADED` keys change;
the rest is logged as needing a restart. Why: docs/design/live-settings.md.
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
        self._seen: Fingerprint = _fingerprint(self.watched()) if load is not None else {}
        """The watched files as they were when the configuration in use was read (taken
        here, at start: a file changed while the gateway starts is still a change)."""
        self._refusal: str | None = None
        """Why the latest reload was refused (None: it was applied): retried at every poll."""
        self._stopped = False
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
        """Reload soon (a signal handler cannot await); `stop()` ends it if still running,
        and after `stop()` this does nothing (a SIGHUP while the gateway stops)."""
        if not self._stopped:
            self._spawn(self._reload_logged(), "config-reload")

    async def stop(self) -> None:
        """Stop watching and any reload under way; idempotent. A reload is cancelled before
        it applies anything, or has applied all of it (its listeners do not await)."""
        self._stopped = True
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

    async def _reload_logged(self, *, retry: bool = False) -> bool:
        try:
            return await self.reload(retry=retry)
        except Exception:  # a bug in a listener: logged, the gateway keeps running
            log.exception("configuration reload failed")
            return False

    async def reload(self, *, retry: bool = False) -> bool:
        """Read, validate and apply the configuration; False (old one kept) on any problem.

        `retry`: the watcher trying again a configuration it saw refused; a refusal for the
        same reason as the last one is then neither logged nor counted again."""
        if self._load is None:
            log.warning("configuration reload: this gateway was not started from a file")
            return False
        async with self._lock:  # SIGHUP and the watcher: one reload at a time
            # the files as they are before reading them: a change from here on is seen by
            # the next poll, and a reload by SIGHUP leaves the watcher nothing to redo
            seen = await asyncio.to_thread(_fingerprint, self.watched())
            self._seen = seen  # a reload that fails (a bug, delivery refusing) is not redone
            try:
                loaded = await asyncio.to_thread(self._load)  # files, off the event loop
            except ConfigError as exc:
                if not (retry and str(exc) == self._refusal):
                    self.refused += 1
                    log.error("configuration reload refused, keeping the running one: %s", exc)
                self._refusal = str(exc)
                return False
            needs_restart = _not_reloaded(self.current, loaded)
            settings = _reloaded(self.current, loaded)
            for hook in self._prepare:
                await hook(settings)
            self.current = settings
            for listener in self._listeners:  # no await in between: all or none seen
                listener(settings)
            self.reloads += 1
            self._refusal = None
            named = [f for f in self.watched() if f not in seen]  # by the new file only
            self._seen = {**seen, **await asyncio.to_thread(_fingerprint, named)}
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
        """Reload whenever a watched file's content changes; runs until cancelled."""
        while True:
            await asyncio.sleep(every)
            await self.poll()

    async def poll(self) -> bool:
        """One look at the watched files; reload if one changed. True if it reloaded.

        Contents are compared (as digests, kept in memory only), not modification times:
        Kubernetes updates a mounted Secret or ConfigMap by pointing a `..data` symlink at a
        new directory, which leaves the path's own times alone. The files are compared with
        what they were when the configuration in use (or the latest refused one) was read.

        While the latest reload is refused, every poll tries again: the refused file may
        name a `file:` secret nobody watches yet (Kubernetes syncs a ConfigMap and a Secret
        independently, up to a minute apart), and it is applied once that secret appears.
        The refusal is logged and counted once, and again only if its reason changes.
        """
        if self._refusal is not None:
            return await self._reload_logged(retry=True)
        now = await asyncio.to_thread(_fingerprint, list(self._seen))
        if now == self._seen:
            return False
        changed = [path for path in now if now[path] != self._seen.get(path)]
        log.info("configuration: %s changed; reloading", ", ".join(changed))
        return await self._reload_logged()


def _reloaded(running: Settings, loaded: Settings) -> Settings:
    """The running configuration with the `RELOADED` keys of the loaded one, and no more."""
    changes: dict[str, object] = {}
    for key in RELOADED:
        section, _, inner = key.partition(".")
        if not inner:
            changes[section] = getattr(loaded, section)
            continue
        base = changes.get(section, getattr(running, section))
        changes[section] = dataclasses.replace(
            base, **{inner: getattr(getattr(loaded, section), inner)}
        )  # type: ignore[type-var]
    return dataclasses.replace(running, **changes)  # type: ignore[arg-type]


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
