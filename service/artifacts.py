"""Loading a model artifact only after it proves what it is.

Order matters: the digest is checked against the manifest and the signature
against the publisher key before a single byte is deserialised, because
joblib/pickle artifacts run code when they are loaded.

Policy:
- a signing key is configured: every artifact needs a valid signature;
- no key: skops artifacts load with the trusted-types list recorded at publish
  time (minus anything that can run commands); joblib/pickle artifacts are
  refused unless ``ALLOW_UNSIGNED_PICKLE`` is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Imported here, not on first use: the gunicorn master preloads this module, so a worker
# loading its first skops artifact under load does not pay ~1 s of import on the spot.
import joblib
import skops.io as sio

from .errors import ArtifactRejected
from .manifest import Manifest
from .signing import file_sha256, verify

# Types no model needs and an attacker would love: refused even when "trusted".
_DANGEROUS_PREFIXES = (
    "os.",
    "posix.",
    "nt.",
    "subprocess.",
    "sys.",
    "shutil.",
    "socket.",
    "importlib.",
    "pickle.",
    "marshal.",
    "runpy.",
    "code.",
    "ctypes.",
    "pty.",
    "webbrowser.",
    "builtins.eval",
    "builtins.exec",
    "builtins.compile",
    "builtins.__import__",
    "builtins.getattr",
    "builtins.setattr",
    "builtins.open",
    "builtins.breakpoint",
)


def artifact_path(version_dir: Path, manifest: Manifest, file_name: str | None = None) -> Path:
    """The artifact's path, refusing names that would escape the version directory."""
    name = file_name or manifest.artifact
    path = (version_dir / name).resolve()
    if path.parent != version_dir.resolve():
        raise ArtifactRejected("bad_manifest", f"artifact name {name!r} leaves the version dir")
    if not path.is_file():
        raise ArtifactRejected("missing_artifact", f"artifact {name!r} not found")
    return path


def check_digest(path: Path, expected: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise ArtifactRejected(
            "digest_mismatch",
            f"{path.name}: sha256 {actual[:16]}… does not match the manifest's {expected[:16]}…",
        )


def check_signature(manifest: Manifest, signing_key: bytes | None) -> bool:
    """True when validly signed; raises when a key is configured and it isn't."""
    if signing_key is None:
        return False
    if not manifest.signature:
        raise ArtifactRejected("unsigned", "artifact is not signed and a signing key is set")
    if not verify(signing_key, manifest.signed_fields(), manifest.signature):
        raise ArtifactRejected("bad_signature", "artifact signature does not verify")
    return True


def load_estimator(
    version_dir: Path,
    manifest: Manifest,
    signing_key: bytes | None,
    allow_unsigned_pickle: bool = False,
) -> Any:
    """Verify, then deserialise the estimator of one version."""
    path = artifact_path(version_dir, manifest)
    check_digest(path, manifest.sha256)
    signed = check_signature(manifest, signing_key)
    if manifest.format == "joblib":
        if not signed and not allow_unsigned_pickle:
            raise ArtifactRejected(
                "unsigned_pickle",
                "joblib/pickle artifact refused: it is not signed with the service's key "
                "(set PREDICTOR_SIGNING_KEY when publishing and serving)",
            )
        return joblib.load(path)
    return _load_skops(path, manifest.trusted_types)


def _load_skops(path: Path, trusted: list[str]) -> Any:
    dangerous = [t for t in trusted if t.startswith(_DANGEROUS_PREFIXES)]
    if dangerous:
        raise ArtifactRejected("untrusted_types", f"refusing to trust {', '.join(dangerous)}")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # a corrupt file fails here, before any object is built
        raise ArtifactRejected("corrupt_artifact", f"cannot read skops file: {exc}") from exc
    unexpected = sorted(set(untrusted) - set(trusted))
    if unexpected:
        raise ArtifactRejected(
            "untrusted_types",
            f"skops artifact holds types not trusted at publish time: {', '.join(unexpected)}",
        )
    try:
        return sio.load(path, trusted=trusted)
    except Exception as exc:
        raise ArtifactRejected("corrupt_artifact", f"cannot load skops file: {exc}") from exc
