"""One way to open a model store, whatever it lives on.

``open_store("models")`` is the directory store (service/store.py);
``open_store("s3://bucket/prefix")`` the same store on the S3 API
(service/store_s3.py). Both answer the interface below, so the registry, the
CLI and publish never ask which one they hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .manifest import Manifest
from .store import ModelStore
from .store_s3 import SCHEME, S3ModelStore


class Store(Protocol):
    """What every model store offers (see ModelStore for the meaning of each call)."""

    root: Path | str

    def names(self) -> list[str]: ...
    def versions(self, name: str) -> list[str]: ...
    def current(self, name: str) -> str | None: ...
    def history(self, name: str) -> list[str]: ...
    def manifest(self, name: str, version: str) -> Manifest: ...
    def version_dir(self, name: str, version: str) -> Path: ...
    def next_version(self, name: str) -> str: ...
    def staging_dir(self, name: str) -> Path: ...
    def commit_version(self, staging: Path, name: str, version: str) -> object: ...
    def promote(self, name: str, version: str) -> None: ...
    def rollback(self, name: str) -> str: ...
    def problem(self, name: str) -> Exception | None: ...
    def broken_versions(self, name: str) -> dict[str, str]: ...
    def read_text(self, name: str, leaf: str) -> str | None: ...
    def write_text(self, name: str, leaf: str, text: str | None) -> None: ...
    def verified(self, name: str) -> str | None: ...
    def mark_verified(self, name: str, version: str) -> bool: ...


def is_s3(uri: Path | str) -> bool:
    return isinstance(uri, str) and uri.startswith(SCHEME)


def open_store(uri: Path | str, cache_dir: Path | str | None = None) -> ModelStore | S3ModelStore:
    """The store at ``uri``: ``s3://BUCKET[/PREFIX]`` or a directory path."""
    if is_s3(uri):
        _zero_errors("s3")
        return S3ModelStore(str(uri), cache_dir=cache_dir)
    _zero_errors("directory")
    text = str(uri)
    if "://" in text:
        raise ValueError(f"model store {text!r}: expected a directory or s3://BUCKET[/PREFIX]")
    return ModelStore(Path(text))


def _zero_errors(backend: str) -> None:
    """Start the error counter at 0, so "no store errors" is a series, not missing data."""
    from . import metrics

    metrics.STORE_ERRORS.labels(backend, "read")
