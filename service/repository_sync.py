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

    def record(self, name: str, unloaded: bool) -> None:
        """After this worker loaded/unloaded ``name``: tell the others."""
        if self.path is None:
            return
        with self._locked() as current:
            if unloaded:
                current.add(name)
            else:
                current.discard(name)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(orjson.dumps(sorted(current)))
            os.replace(tmp, self.path)  # a new inode: every worker sees the change
            self._seen = self._stamp()
            self._unloaded = set(current)

    def apply(self, registry: ModelRegistry) -> None:
        """Bring this worker's registry in line with the shared file (cheap when unchanged)."""
        if self.path is None:
            return
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return
        try:
            wanted = set(orjson.loads(self.path.read_bytes()))
        except (OSError, orjson.JSONDecodeError, TypeError):
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

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)  # type: ignore[arg-type]
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[set[str]]:
        assert self.path is not None
        lock_path = self.path.with_suffix(".lock")
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    current = set(orjson.loads(self.path.read_bytes()))
                except (OSError, orjson.JSONDecodeError, TypeError):
                    current = set()
                yield current
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
