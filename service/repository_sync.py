"""Make a repository load/unload reach every gunicorn worker, not just the one that answered.

Each worker holds its own registry, so an unload handled by worker A would leave
worker B serving. The repository routes therefore record what they did in one
small file shared by the workers of this server (the per-server directory the
gunicorn config creates and wipes at start, ``PROMETHEUS_MULTIPROC_DIR``), and
every worker applies that file before it handles a request: one ``stat`` when
nothing changed. The hook is installed only when an admin token is configured,
so a server with the repository API off pays nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from .errors import PredictorError
from .models.registry import ModelRegistry

log = logging.getLogger("predictor.repository")

STATE_FILE = "repository-state.json"


def shared_state_path() -> Path | None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(directory) / STATE_FILE if directory else None


class RepositorySync:
    """This worker's view of the shared unloaded set, and how to catch up with it."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None  # (inode, mtime_ns) of the file applied
        self._unloaded: set[str] = set()
        self._pins: set[tuple[str, str]] = set()  # versions loaded besides the current ones

    def record(self, name: str, unloaded: bool) -> None:
        """After this worker loaded/unloaded ``name``: tell the others."""
        self._update(lambda names, pins: (names | {name}) if unloaded else (names - {name}))

    def record_pin(self, name: str, version: str, pinned: bool) -> None:
        """After this worker loaded/unloaded one version of ``name``: tell the others."""
        key = (name, version)
        self._update(None, lambda pins: (pins | {key}) if pinned else (pins - {key}))

    def _update(self, names_change: Any, pins_change: Any = None) -> None:
        if self.path is None:
            return
        with self._locked() as (names, pins):
            if names_change is not None:
                names = names_change(names, pins)
            if pins_change is not None:
                pins = pins_change(pins)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(orjson.dumps({"unloaded": sorted(names), "pinned": sorted(pins)}))
            os.replace(tmp, self.path)  # a new inode: every worker sees the change
            self._seen = self._stamp()
            self._unloaded, self._pins = set(names), set(pins)

    def apply(self, registry: ModelRegistry) -> None:
        """Bring this worker's registry in line with the shared file (cheap when unchanged)."""
        if self.path is None:
            return
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return
        try:
            wanted, pins = _parse(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError, TypeError, ValueError):
            return  # mid-replace or unreadable: try again on the next request
        self._seen = stamp
        for name in sorted(wanted - self._unloaded):
            with contextlib.suppress(PredictorError):
                registry.unload(name)
        for name in sorted(self._unloaded - wanted):
            try:
                registry.load(name)
            except PredictorError as exc:
                log.error("model %s: load requested through the repository failed: %s", name, exc)
        self._unloaded = wanted
        for name, version in sorted(self._pins - pins):
            registry.unpin(name, version)
        for name, version in sorted(pins - self._pins):
            try:
                registry.pin(name, version)
            except PredictorError as exc:
                log.error("model %s version %s: load through the repository failed: %s",
                          name, version, exc)  # fmt: skip
        self._pins = pins

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)  # type: ignore[arg-type]
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[tuple[set[str], set[tuple[str, str]]]]:
        assert self.path is not None
        lock_path = self.path.with_suffix(".lock")
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    current = _parse(self.path.read_bytes())
                except (OSError, orjson.JSONDecodeError, TypeError, ValueError):
                    current = (set(), set())
                yield current
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _parse(data: bytes) -> tuple[set[str], set[tuple[str, str]]]:
    """(unloaded names, pinned versions) from the shared file."""
    value = orjson.loads(data)
    if isinstance(value, list):  # the older form: unloaded names only
        return set(value), set()
    return set(value["unloaded"]), {(str(n), str(v)) for n, v in value["pinned"]}
