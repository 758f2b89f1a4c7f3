"""The model store: a directory tree of immutable versions and a ``current`` pointer.

    <root>/<name>/<version>/manifest.json + artifact
    <root>/<name>/current         text file: the version being served
    <root>/<name>/history         one promoted version per line (for rollback)

A version directory appears whole or not at all (written under a temporary name
and renamed); ``current`` is replaced with ``os.replace``, so readers see the
old or the new pointer, never a half-written one.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from .errors import PredictorError, not_found
from .manifest import MANIFEST_FILE, Manifest

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CURRENT_FILE = "current"
HISTORY_FILE = "history"


def check_name(kind: str, value: str) -> str:
    if not NAME_PATTERN.match(value) or value in {CURRENT_FILE, HISTORY_FILE}:
        raise PredictorError(
            400,
            f"invalid_{kind}",
            f"{kind} {value!r} is not valid: expected letters, digits, '.', '_' or '-' "
            "(at most 64, starting with a letter or digit)",
        )
    return value


def version_sort_key(version: str) -> tuple:
    """Numeric versions sort as numbers, others after them alphabetically."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


class ModelStore:
    """Reads and writes one model store directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # --- reading ---------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and NAME_PATTERN.match(p.name) and not p.name.startswith(".")
        )

    def versions(self, name: str) -> list[str]:
        model_dir = self.root / name
        if not model_dir.is_dir():
            return []
        found = [
            p.name
            for p in model_dir.iterdir()
            if p.is_dir() and NAME_PATTERN.match(p.name) and (p / MANIFEST_FILE).is_file()
        ]
        return sorted(found, key=version_sort_key)

    def current(self, name: str) -> str | None:
        try:
            value = (self.root / name / CURRENT_FILE).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return value or None

    def version_dir(self, name: str, version: str) -> Path:
        return self.root / name / version

    def manifest(self, name: str, version: str) -> Manifest:
        if name not in self.names():
            raise not_found("model_not_found", f"model {name!r} not found in the store")
        directory = self.version_dir(name, version)
        if not NAME_PATTERN.match(version) or not (directory / MANIFEST_FILE).is_file():
            raise not_found(
                "version_not_found",
                f"model {name!r} has no version {version!r}; "
                f"available: {', '.join(self.versions(name)) or 'none'}",
            )
        return Manifest.read(directory)

    def history(self, name: str) -> list[str]:
        try:
            text = (self.root / name / HISTORY_FILE).read_text()
        except FileNotFoundError:
            return []
        return [line.strip() for line in text.splitlines() if line.strip()]

    # --- writing ---------------------------------------------------------
    def next_version(self, name: str) -> str:
        numeric = [int(v) for v in self.versions(name) if v.isdigit()]
        return str(max(numeric, default=0) + 1)

    def staging_dir(self, name: str) -> Path:
        """A fresh temporary directory beside the versions (same filesystem, so rename works)."""
        model_dir = self.root / check_name("model", name)
        model_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))

    def commit_version(self, staging: Path, name: str, version: str) -> Path:
        """Rename a fully written staging directory to its version; refuses to overwrite."""
        target = self.version_dir(name, check_name("version", version))
        if target.exists():
            raise PredictorError(409, "version_exists", f"{name} version {version} already exists")
        os.rename(staging, target)
        _fsync_dir(target.parent)
        return target

    def promote(self, name: str, version: str) -> None:
        """Point ``current`` at an existing version, atomically."""
        self.manifest(name, version)  # raises when unknown
        model_dir = self.root / name
        _atomic_write(model_dir / CURRENT_FILE, version + "\n")
        with open(model_dir / HISTORY_FILE, "a") as fh:
            fh.write(version + "\n")

    def rollback(self, name: str) -> str:
        """Promote the version that was current before the present one; returns it."""
        current = self.current(name)
        if current is None:
            raise not_found("model_not_found", f"model {name!r} has no current version")
        history = self.history(name)
        known = set(self.versions(name))
        # Drop the present version (and anything since deleted) off the end of the history.
        while history and (history[-1] == current or history[-1] not in known):
            history.pop()
        if history:
            target = history[-1]
            _atomic_write(self.root / name / CURRENT_FILE, target + "\n")
            _atomic_write(self.root / name / HISTORY_FILE, "\n".join(history) + "\n")
            return target
        raise PredictorError(
            409, "no_previous_version", f"model {name!r} has no earlier version to roll back to"
        )


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
