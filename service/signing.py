"""Artifact digests and publisher signatures (HMAC-SHA256)."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sign(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verify(key: bytes, message: bytes, signature: str | None) -> bool:
    """Constant-time check of a signature; a missing one never verifies."""
    if not signature:
        return False
    return hmac.compare_digest(sign(key, message), signature)
