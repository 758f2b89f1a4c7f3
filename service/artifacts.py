"""Loading a model artifact only after it proves what it is.

Order matters: every file digest is checked against the manifest and the signature
(over the whole manifest, so over those digests too) against the publisher key before
a single byte is deserialised, because joblib/pickle artifacts run code when they are
loaded and a skops file names the types it wants constructed.

Policy:
- a signing key is configured (the default everywhere the stack ships): every version
  needs a valid signature over its whole manifest, and the manifest must list the digest
  of every file in the version directory, no more and no fewer;
- no key (only with ``PREDICTOR_ALLOW_UNSIGNED``): skops artifacts load with the
  allow-list of service/trust.py alone, whatever the manifest says it trusts;
  joblib/pickle artifacts are refused unless ``PREDICTOR_ALLOW_UNSIGNED_PICKLE`` is set.
- skops types: the allow-list, plus the types a signed manifest names, minus the types
  that are never trusted (service/trust.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Imported here, not on first use: the gunicorn master preloads this module, so a worker
# loading its first skops artifact under load does not pay ~1 s of import on the spot.
import joblib
import skops.io as sio

from . import trust
from .errors import ArtifactRejected
from .manifest import Manifest
from .signing import VersionFilesError, file_sha256, verify, version_files


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
        raise ArtifactRejected("unsigned", "version is not signed and a signing key is set")
    if not verify(signing_key, manifest.signed_fields(), manifest.signature):
        raise ArtifactRejected(
            "bad_signature", "the signature does not cover this manifest: it was changed or "
            "signed with another key"
        )  # fmt: skip
    return True


def check_files(version_dir: Path, manifest: Manifest, required: bool) -> None:
    """Every file of the version is listed in the manifest with its digest, and only those."""
    try:
        actual = version_files(version_dir)
    except (VersionFilesError, OSError) as exc:
        raise ArtifactRejected("bad_files", str(exc)) from exc
    listed = manifest.files
    if not listed:
        if required:
            raise ArtifactRejected(
                "no_file_digests", "the manifest lists no file digests: publish it again"
            )
        return  # an unsigned version published before file digests were recorded
    extra = sorted(set(actual) - set(listed))
    if extra:
        raise ArtifactRejected("unexpected_file", f"files not in the manifest: {', '.join(extra)}")
    missing = sorted(set(listed) - set(actual))
    if missing:
        raise ArtifactRejected("missing_artifact", f"files missing: {', '.join(missing)}")
    for name, expected in listed.items():
        if actual[name] != expected:
            raise ArtifactRejected(
                "digest_mismatch",
                f"{name}: sha256 {actual[name][:16]}… does not match the manifest's "
                f"{expected[:16]}…",
            )


def verify_version(version_dir: Path, manifest: Manifest, signing_key: bytes | None) -> bool:
    """Signature, then every file digest; True when the version is signed. Reads, never loads."""
    signed = check_signature(manifest, signing_key)
    check_files(version_dir, manifest, required=signed)
    return signed


def load_estimator(
    version_dir: Path,
    manifest: Manifest,
    signing_key: bytes | None,
    allow_unsigned_pickle: bool = False,
) -> Any:
    """Verify, then deserialise the estimator of one version."""
    signed = verify_version(version_dir, manifest, signing_key)
    path = artifact_path(version_dir, manifest)
    check_digest(path, manifest.sha256)
    if manifest.format == "joblib":
        if not signed and not allow_unsigned_pickle:
            raise ArtifactRejected(
                "unsigned_pickle",
                "joblib/pickle artifact refused: it is not signed with the service's key "
                "(set PREDICTOR_SIGNING_KEY_FILE when publishing and serving)",
            )
        return joblib.load(path)
    # An unsigned manifest's list is anyone's word: only the allow-list applies then.
    return load_skops(path, manifest.trusted_types if signed else [])


def load_skops(path: Path, trusted: list[str]) -> Any:
    """Load a skops file constructing only allow-listed types and ``trusted`` ones."""
    try:
        found = sio.get_untrusted_types(file=path)  # reads the schema; builds nothing
    except Exception as exc:  # a corrupt file fails here, before any object is built
        raise ArtifactRejected("corrupt_artifact", f"cannot read skops file: {exc}") from exc
    refused, missing = trust.unexplained(found, trusted)
    if refused:
        raise ArtifactRejected(
            "untrusted_types", f"never trusted: {trust.describe_refused(refused)}"
        )
    if missing:
        raise ArtifactRejected(
            "untrusted_types",
            f"types outside the allow-list that no signed manifest trusts: {', '.join(missing)}",
        )
    try:
        return sio.load(path, trusted=sorted(found))
    except Exception as exc:
        raise ArtifactRejected("corrupt_artifact", f"cannot load skops file: {exc}") from exc
