"""Artifact digests and publisher signatures (HMAC-SHA256) over a whole version.

What is signed: the canonical encoding of every manifest field but the signature
itself (``canonical_manifest``), and through the manifest's ``files`` map the digest
of every file in the version directory (``version_files``). So a signed version whose
labels, feature order, sample input, trusted types or any file was changed, or that
gained or lost a file, no longer verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"


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


def canonical_manifest(fields: dict[str, Any]) -> bytes:
    """One byte string per manifest content: sorted keys, no whitespace, no signature.

    ``fields`` is the manifest as JSON values with fields at their default left out
    (``Manifest.signed_fields`` builds it), so a field added to the manifest later with
    a default does not change what older versions signed.
    """
    body = {k: v for k, v in fields.items() if k != "signature"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode()


class VersionFilesError(ValueError):
    """The version directory holds something other than plain files."""


def version_files(directory: Path) -> dict[str, str]:
    """``{file name: sha256}`` of every entry of a version directory but its manifest.

    Only regular files count; a symlink, directory, FIFO or device is refused (never
    opened), because the signature can only vouch for bytes it has read.
    """
    out: dict[str, str] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name == MANIFEST_NAME:
                continue
            mode = entry.stat(follow_symlinks=False).st_mode
            if not stat.S_ISREG(mode):
                raise VersionFilesError(f"{entry.name!r} in the version is not a regular file")
            out[entry.name] = file_sha256(Path(entry.path))
    return dict(sorted(out.items()))
