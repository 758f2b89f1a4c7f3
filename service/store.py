"""The model store: a directory tree of immutable versions and a ``current`` pointer.

    <root>/<name>/<version>/manifest.json + artifact
    <root>/<name>/current         text file: the version being served
    <root>/<name>/history         one promoted version per line (for rollback)
    <root>/<name>/verified        last-known-good: the last version a worker verified and served
    <root>/<name>/.lock           flock'd by promote and rollback

A version directory appears whole or not at all (written under a temporary name
and renamed); ``current`` is replaced with ``os.replace``, so readers see the
old or the new pointer, never a half-written one. Promote and rollback hold an
exclusive ``flock`` on the model's lock file, so ``current`` and ``history``
always change together.

Whoever can write the store can leave anything in it, so reading is defensive:
the store opens only regular files (checked with ``fstat`` on a descriptor opened
``O_NONBLOCK``, so a FIFO never blocks a reader), never follows a symlink out of
the store, reads at most a bounded number of bytes, and decodes strict UTF-8. A
broken entry concerns its own model only: ``current`` answers None and
``problem`` says why; ``manifest`` raises ``StoreEntryBroken``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from .errors import PredictorError, not_found
from .manifest import MANIFEST_FILE, Manifest

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CURRENT_FILE = "current"
HISTORY_FILE = "history"
VERIFIED_FILE = "verified"
LOCK_FILE = ".lock"
RESERVED_NAMES = {CURRENT_FILE, HISTORY_FILE, VERIFIED_FILE}
POINTER_MAX_BYTES = 4096  # current / verified hold one version name
HISTORY_MAX_BYTES = 1 << 20
MANIFEST_MAX_BYTES = 16 << 20


class StoreEntryBroken(PredictorError):
    """An entry of the store (pointer, manifest, directory) that cannot be read safely."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(503, "store_entry_broken", message)
        self.kind = kind  # bad_current | bad_manifest | bad_history | bad_entry (metric label)


def check_name(kind: str, value: str) -> str:
    if not NAME_PATTERN.match(value) or value in RESERVED_NAMES:
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
        # broken_versions re-checks a manifest only when its file changed (watcher polls it).
        self._manifest_checks: dict[tuple[str, str], tuple[tuple[int, ...], str | None]] = {}

    # --- reading ---------------------------------------------------------
    def names(self) -> list[str]:
        try:
            entries = list(self.root.iterdir())
        except OSError:
            return []
        return sorted(
            p.name
            for p in entries
            if NAME_PATTERN.match(p.name) and p.name not in RESERVED_NAMES and self._is_dir(p)
        )

    def versions(self, name: str) -> list[str]:
        """Versions whose directory holds a manifest entry (readable or not: see manifest)."""
        model_dir = self.root / name
        if not NAME_PATTERN.match(name) or not self._is_dir(model_dir):
            return []
        try:
            entries = list(model_dir.iterdir())
        except OSError:
            return []
        found = [
            p.name
            for p in entries
            if NAME_PATTERN.match(p.name)
            and p.name not in RESERVED_NAMES
            and self._is_dir(p)
            and os.path.lexists(p / MANIFEST_FILE)
        ]
        return sorted(found, key=version_sort_key)

    def current(self, name: str) -> str | None:
        """The version ``current`` names; None when absent or broken (``problem`` says why)."""
        try:
            return self._pointer(name, CURRENT_FILE)
        except StoreEntryBroken:
            return None

    def problem(self, name: str) -> StoreEntryBroken | None:
        """Why the model's ``current`` pointer cannot be used, or None when it can."""
        try:
            self._pointer(name, CURRENT_FILE)
        except StoreEntryBroken as exc:
            return exc
        return None

    def read_text(self, name: str, leaf: str) -> str | None:
        """A small file beside ``current`` (None when absent); the S3 store has the same call.

        Read like a pointer (never blocks on a FIFO, never leaves the store, bounded), so
        a broken file is StoreEntryBroken, which a caller may treat as absent."""
        path = self.root / check_name("model", name) / leaf
        try:
            data = self._read(path, POINTER_MAX_BYTES, "bad_entry")
        except (FileNotFoundError, NotADirectoryError):
            return None
        return _decode(data, f"{name}/{leaf}", "bad_entry")

    def write_text(self, name: str, leaf: str, text: str | None) -> None:
        """Write atomically (or delete, with None) a small file beside ``current``."""
        path = self.root / check_name("model", name) / leaf
        if text is None:
            path.unlink(missing_ok=True)
        else:
            _atomic_write(path, text)

    def verified(self, name: str) -> str | None:
        """The last-known-good version (written when a worker first served it), if usable."""
        try:
            version = self._pointer(name, VERIFIED_FILE)
        except StoreEntryBroken:
            return None
        return version if version in self.versions(name) else None

    def mark_verified(self, name: str, version: str) -> bool:
        """Record ``version`` as last-known-good; False when the store is read-only."""
        if self.verified(name) == version:
            return True
        try:
            _atomic_write(self.root / check_name("model", name) / VERIFIED_FILE, version + "\n")
        except OSError:
            return False
        return True

    def broken_versions(self, name: str) -> dict[str, str]:
        """Versions whose manifest cannot be read, with the reason."""
        out = {}
        for version in self.versions(name):
            path = self.version_dir(name, version) / MANIFEST_FILE
            try:
                st = os.lstat(path)
                signature = (st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)
            except OSError:
                continue
            cached = self._manifest_checks.get((name, version))
            if cached is None or cached[0] != signature:
                try:
                    self.manifest(name, version)
                    cached = (signature, None)
                except StoreEntryBroken as exc:
                    cached = (signature, exc.message)
                except PredictorError:
                    continue
                self._manifest_checks[(name, version)] = cached
            if cached[1] is not None:
                out[version] = cached[1]
        return out

    def version_dir(self, name: str, version: str) -> Path:
        return self.root / name / version

    def manifest(self, name: str, version: str) -> Manifest:
        """The parsed manifest; 404 when unknown, StoreEntryBroken (503) when unreadable."""
        if name not in self.names():
            raise not_found("model_not_found", f"model {name!r} not found in the store")
        if not NAME_PATTERN.match(version) or version not in self.versions(name):
            raise not_found(
                "version_not_found",
                f"model {name!r} has no version {version!r}; "
                f"available: {', '.join(self.versions(name)) or 'none'}",
            )
        path = self.version_dir(name, version) / MANIFEST_FILE
        data = self._read(path, MANIFEST_MAX_BYTES, "bad_manifest")
        text = _decode(data, f"{name}/{version}/{MANIFEST_FILE}", "bad_manifest")
        try:
            manifest = Manifest.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "document"
            raise StoreEntryBroken(
                "bad_manifest",
                f"{name} version {version}: manifest is not valid ({where}: {first['msg']})",
            ) from None
        if manifest.name != name or manifest.version != version:
            raise StoreEntryBroken(
                "bad_manifest",
                f"{name} version {version}: manifest names {manifest.name} "
                f"version {manifest.version}",
            )
        return manifest

    def history(self, name: str) -> list[str]:
        try:
            data = self._read(self.root / name / HISTORY_FILE, HISTORY_MAX_BYTES, "bad_history")
        except FileNotFoundError:
            return []
        text = _decode(data, f"{name}: history", "bad_history")
        return [line.strip() for line in text.splitlines() if line.strip()]

    # --- safe reads --------------------------------------------------------
    def _inside(self, path: Path) -> bool:
        """True when ``path``, symlinks resolved, stays inside the store root."""
        root = os.path.realpath(self.root)
        return os.path.realpath(path).startswith(root + os.sep)

    def _is_dir(self, path: Path) -> bool:
        try:
            return stat.S_ISDIR(os.stat(path).st_mode) and self._inside(path)
        except OSError:
            return False

    def _read(self, path: Path, limit: int, kind: str) -> bytes:
        """A regular file's bytes; FileNotFoundError when absent, StoreEntryBroken otherwise.

        Opened O_NONBLOCK and checked with fstat on the descriptor: a FIFO or device
        swapped in between a check and the open still never blocks or gets read.
        """
        where = os.path.relpath(path, self.root)
        if not os.path.lexists(path):
            raise FileNotFoundError(path)
        if not self._inside(path):
            raise StoreEntryBroken(kind, f"{where} leaves the model store (symlink)")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StoreEntryBroken(kind, f"{where} cannot be opened: {exc.strerror}") from None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise StoreEntryBroken(kind, f"{where} is a {_file_kind(mode)}, not a file")
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = fh.read(limit + 1)
        except OSError as exc:
            raise StoreEntryBroken(kind, f"{where} cannot be read: {exc.strerror}") from None
        finally:
            os.close(fd)
        if len(data) > limit:
            raise StoreEntryBroken(kind, f"{where} is larger than {limit} bytes")
        return data

    def _pointer(self, name: str, file_name: str) -> str | None:
        """The version a pointer file names: None when absent, StoreEntryBroken when bad."""
        kind = "bad_current" if file_name == CURRENT_FILE else "bad_entry"
        try:
            data = self._read(self.root / name / file_name, POINTER_MAX_BYTES, kind)
        except (FileNotFoundError, NotADirectoryError):
            return None
        value = _decode(data, f"{name}/{file_name}", kind).strip()
        if not value:
            return None
        if not NAME_PATTERN.match(value) or value in RESERVED_NAMES:
            raise StoreEntryBroken(
                kind, f"{name}/{file_name} names {value[:80]!r}, which is not a version name"
            )
        return value

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
        """Point ``current`` at an existing version and append it to ``history``, atomically."""
        self.manifest(name, version)  # raises when unknown or unreadable
        model_dir = self.root / name
        with self._locked(name):
            history = self.history(name)
            _atomic_write(model_dir / HISTORY_FILE, "".join(v + "\n" for v in [*history, version]))
            _atomic_write(model_dir / CURRENT_FILE, version + "\n")

    def rollback(self, name: str) -> str:
        """Promote the version that was current before the present one; returns it."""
        if name not in self.names():
            raise not_found("model_not_found", f"model {name!r} not found in the store")
        with self._locked(name):
            current = self._pointer(name, CURRENT_FILE)
            if current is None:
                raise not_found("model_not_found", f"model {name!r} has no current version")
            history = self.history(name)
            known = set(self.versions(name))
            # Drop the present version (and anything since deleted) off the end of the history.
            while history and (history[-1] == current or history[-1] not in known):
                history.pop()
            if not history:
                raise PredictorError(
                    409,
                    "no_previous_version",
                    f"model {name!r} has no earlier version to roll back to",
                )
            target = history[-1]
            # history first: a crash in between leaves a history that rollback can still walk.
            _atomic_write(self.root / name / HISTORY_FILE, "\n".join(history) + "\n")
            _atomic_write(self.root / name / CURRENT_FILE, target + "\n")
            return target

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """An exclusive flock on ``<name>/.lock``: promote and rollback never interleave."""
        path = self.root / check_name("model", name) / LOCK_FILE
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO):
                raise
            raise StoreEntryBroken("bad_entry", f"{name}/{LOCK_FILE}: {exc.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreEntryBroken("bad_entry", f"{name}/{LOCK_FILE} is not a regular file")
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _decode(data: bytes, where: str, kind: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StoreEntryBroken(kind, f"{where} is not UTF-8 (byte {exc.start})") from None


def _file_kind(mode: int) -> str:
    for test, label in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return label
    return "special file"


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
