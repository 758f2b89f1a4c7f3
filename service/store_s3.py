"""The model store on the S3 API: the directory store's layout and rules under a prefix.

    s3://BUCKET/PREFIX/<name>/<version>/manifest.json + artifact(s)
    s3://BUCKET/PREFIX/<name>/current     the version being served
    s3://BUCKET/PREFIX/<name>/history     one promoted version per line

Endpoint and credentials come from the standard AWS chain (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` and its files,
instance and pod roles): boto3 reads them, this module never does.

Same semantics as the directory store:
- publish uploads a version's files first and its manifest last (the manifest is
  what makes a version exist), refusing a version that already exists;
- promote and rollback change ``history`` and ``current`` with compare-and-swap
  writes (``If-Match`` on the ETag, ``If-None-Match: *`` for a first write), so
  concurrent promotions never lose one;
- the service loads from a local copy of each version, fetched once and
  digest-checked before anything reads it; signatures are checked by the loader
  exactly as for a directory.

When S3 cannot be reached, reads answer what they last saw (counted in
``predictor_store_errors_total`` and logged), so a serving worker keeps serving
and stays ready; writes fail with a clear 503.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from . import metrics
from .errors import ArtifactRejected, PredictorError, not_found
from .manifest import MANIFEST_FILE, Manifest
from .store import (
    CURRENT_FILE,
    HISTORY_FILE,
    NAME_PATTERN,
    VERIFIED_FILE,
    check_name,
    version_sort_key,
)

log = logging.getLogger("predictor.store")

SCHEME = "s3://"
READ_TTL_SECONDS = 0.25  # reads within this window reuse the last answer (cheap /readyz)
RETRY_SECONDS = 2.0  # after a failed read, answer from memory this long before trying S3 again
CAS_ATTEMPTS = 500

T = TypeVar("T")


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, "some/prefix/"); a clear error otherwise."""
    if not uri.startswith(SCHEME):
        raise ValueError(f"{uri!r} is not an S3 URI: expected s3://BUCKET[/PREFIX]")
    bucket, _, prefix = uri[len(SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket: expected s3://BUCKET[/PREFIX]")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/") if prefix else ""


def default_cache_dir(uri: str) -> Path:
    """Where local copies of versions live when no cache directory is configured."""
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "predictor-store-cache" / digest


def s3_client() -> Any:
    """A boto3 S3 client from the standard AWS configuration, with short timeouts."""
    import boto3
    from botocore.config import Config

    options: dict[str, Any] = {
        "connect_timeout": 1,
        "read_timeout": 5,
        "retries": {"total_max_attempts": 2, "mode": "standard"},
    }
    # Self-hosted S3 (SeaweedFS, MinIO, Ceph) rarely has per-bucket DNS names.
    if os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3"):
        options["s3"] = {"addressing_style": "path"}
    return boto3.session.Session().client("s3", config=Config(**options))


class S3ModelStore:
    """Reads and writes one model store under an S3 prefix; the directory store's interface."""

    def __init__(self, uri: str, cache_dir: Path | str | None = None, client: Any = None) -> None:
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = parse_uri(uri)
        self.root = self.uri  # what messages name as "the model store"
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(self.uri)
        self._client = client
        self._owns_client = client is None
        self._client_pid = os.getpid()
        self._client_lock = threading.Lock()
        self._seen: dict[str, tuple[float, Any]] = {}  # read key -> (when, last good answer)
        self._etags: dict[str, tuple[str, bytes]] = {}  # object key -> (etag, body)
        self._failing: set[str] = set()
        self._retry_at = 0.0

    @property
    def client(self) -> Any:
        """This process's boto3 client. A gunicorn worker is forked from a master that
        preloaded the store: the client it inherits holds the master's pooled keep-alive
        connections, and two processes reading answers off one socket get each other's
        (a canary read answered with a manifest, a listing with a 304). After a fork the
        inherited client is left alone (not closed: its sockets are the master's too) and
        a new one is made."""
        if self._client is None or (self._owns_client and self._client_pid != os.getpid()):
            with self._client_lock:
                if self._client is None or (self._owns_client and self._client_pid != os.getpid()):
                    self._client = s3_client()
                    self._client_pid = os.getpid()
        return self._client

    def __repr__(self) -> str:
        return f"S3ModelStore({self.uri!r})"

    # --- reading ---------------------------------------------------------
    def names(self) -> list[str]:
        def fetch() -> list[str]:
            found = set()
            for page in self._pages(self.prefix, delimiter="/"):
                for entry in page.get("CommonPrefixes", []):
                    name = entry["Prefix"][len(self.prefix) :].rstrip("/")
                    if NAME_PATTERN.match(name):
                        found.add(name)
            return sorted(found)

        return self._read("names", "names", fetch)

    def versions(self, name: str) -> list[str]:
        if not NAME_PATTERN.match(name):
            return []

        def fetch() -> list[str]:
            base = f"{self.prefix}{name}/"
            found = set()
            for page in self._pages(base):
                for entry in page.get("Contents", []):
                    version, _, leaf = entry["Key"][len(base) :].partition("/")
                    if leaf == MANIFEST_FILE and NAME_PATTERN.match(version):
                        found.add(version)
            return sorted(found, key=version_sort_key)

        return self._read(f"versions:{name}", "versions", fetch)

    def current(self, name: str) -> str | None:
        if not NAME_PATTERN.match(name):
            return None
        text = self._read(f"current:{name}", "current", lambda: self._get_text(name, CURRENT_FILE))
        return _first_line(text)

    def history(self, name: str) -> list[str]:
        text = self._read(f"history:{name}", "history", lambda: self._get_text(name, HISTORY_FILE))
        return [line.strip() for line in (text or "").splitlines() if line.strip()]

    def manifest(self, name: str, version: str) -> Manifest:
        return self._manifest(name, version)[0]

    def _manifest(self, name: str, version: str) -> tuple[Manifest, bytes]:
        """The version's manifest as S3 holds it now, with its bytes (conditional GETs)."""
        if not NAME_PATTERN.match(name) or name not in self.names():
            raise not_found("model_not_found", f"model {name!r} not found in the store")
        if NAME_PATTERN.match(version):
            key = self._key(name, version, MANIFEST_FILE)
            body = self._read(
                f"manifest:{name}/{version}",
                "manifest",
                lambda: self._get_bytes(key, conditional=True),
            )
            if body is not None:
                manifest = Manifest.model_validate_json(body)
                if manifest.name != name or manifest.version != version:
                    raise PredictorError(
                        422,
                        "bad_manifest",
                        f"{key} describes {manifest.name} version {manifest.version}",
                    )
                return manifest, body
        raise not_found(
            "version_not_found",
            f"model {name!r} has no version {version!r}; "
            f"available: {', '.join(self.versions(name)) or 'none'}",
        )

    def version_dir(self, name: str, version: str) -> Path:
        """The local copy of a version, fetched and digest-checked on first use.

        The copy is named after the digest of the manifest S3 holds now, not after the
        version alone: a bucket emptied and published again (or another endpoint with
        the same URI) has a different version 1, and its files must never be answered
        from a copy of the old one."""
        check_name("model", name)
        check_name("version", version)
        manifest, body = self._manifest(name, version)
        local = self.cache_dir / name / f"{version}-{hashlib.sha256(body).hexdigest()[:32]}"
        # Copies are renamed into place only whole and digest-checked: one that exists is good.
        # (No marker file inside it: a version directory holds only the manifest's files.)
        if local.is_dir():
            return local
        # Imported only to fetch: service.artifacts brings skops and all of scikit-learn,
        # which a CLI listing or promoting versions has no use for.
        from .artifacts import artifact_path, check_digest

        (self.cache_dir / name).mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self.cache_dir / name))
        try:
            # Every file the signature covers (manifest.files), else the artifact and graph.
            files = dict(getattr(manifest, "files", None) or {})
            if not files:
                files = {manifest.artifact: manifest.sha256}
                compiled = manifest.compiled or {}
                if compiled.get("sha256"):
                    files[compiled.get("artifact", "model.onnx")] = compiled["sha256"]
            for file_name, digest in files.items():
                if Path(file_name).name != file_name or file_name.startswith("."):
                    raise ArtifactRejected("bad_manifest", f"artifact name {file_name!r} is unsafe")
                path = tmp / file_name
                key = self._key(name, version, file_name)
                try:
                    self.client.download_file(self.bucket, key, str(path))
                except Exception as exc:
                    self._failed("fetch", exc)
                    raise PredictorError(
                        503, "store_unavailable", f"cannot fetch s3://{self.bucket}/{key}: {exc}"
                    ) from exc
                # A tampered or truncated copy never loads.
                check_digest(artifact_path(tmp, manifest, file_name), digest)
            (tmp / MANIFEST_FILE).write_bytes(body)
            try:
                os.rename(tmp, local)
            except OSError:  # another worker fetched it first: theirs is as good
                if not local.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return local

    def problem(self, name: str) -> Exception | None:
        """Why ``current`` cannot be used (None: it can); S3 has no symlinks or odd files."""
        return None

    def broken_versions(self, name: str) -> dict[str, str]:
        """Versions whose manifest cannot be read (only checked when a version loads on S3)."""
        return {}

    def verified(self, name: str) -> str | None:
        """The last-known-good version (written when a worker first served it), if usable."""
        if not NAME_PATTERN.match(name):
            return None
        try:
            version = _first_line(self.read_text(name, VERIFIED_FILE))
        except PredictorError:
            return None
        return version if version and version in self.versions(name) else None

    def mark_verified(self, name: str, version: str) -> bool:
        """Record ``version`` as last-known-good; False when S3 refuses the write."""
        if self.verified(name) == version:
            return True
        try:
            self.write_text(name, VERIFIED_FILE, version + "\n")
        except PredictorError:
            return False
        return True

    # --- writing ---------------------------------------------------------
    def next_version(self, name: str) -> str:
        numeric = [int(v) for v in self.versions(name) if v.isdigit()]
        return str(max(numeric, default=0) + 1)

    def staging_dir(self, name: str) -> Path:
        """A local directory the publisher fills; commit_version uploads it."""
        check_name("model", name)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=self.cache_dir))

    def commit_version(self, staging: Path, name: str, version: str) -> str:
        """Upload every file, the manifest last; refuses to overwrite an existing version."""
        check_name("version", version)
        manifest_key = self._key(name, version, MANIFEST_FILE)
        try:
            if self._exists(manifest_key):
                raise PredictorError(
                    409, "version_exists", f"{name} version {version} already exists"
                )
            files = sorted(p for p in staging.iterdir() if p.is_file())
            for path in files:
                if path.name != MANIFEST_FILE:
                    self.client.upload_file(
                        str(path), self.bucket, self._key(name, version, path.name)
                    )
            self._put(manifest_key, (staging / MANIFEST_FILE).read_bytes(), if_none_match=True)
        except _PreconditionFailed as exc:
            raise PredictorError(
                409, "version_exists", f"{name} version {version} already exists"
            ) from exc
        except PredictorError:
            raise
        except Exception as exc:
            raise self._write_error("publish", exc) from exc
        shutil.rmtree(staging, ignore_errors=True)
        self._forget(name)
        return f"s3://{self.bucket}/{self._key(name, version, '')}"

    def promote(self, name: str, version: str) -> None:
        """Append ``version`` to the history, then point ``current`` at the history's end."""
        self.manifest(name, version)  # raises when unknown
        self._cas(name, HISTORY_FILE, lambda text: _lines(text) + [version], "promote")
        self._sync_current(name)

    def rollback(self, name: str) -> str:
        """Promote the version that was current before the present one; returns it."""
        known = set(self.versions(name))
        outcome: dict[str, str] = {}

        def drop_current(text: str | None) -> list[str]:
            history = _lines(text)
            current = _first_line(self._fresh_text(name, CURRENT_FILE))
            if not current:
                raise not_found("model_not_found", f"model {name!r} has no current version")
            while history and (history[-1] == current or history[-1] not in known):
                history.pop()
            if not history:
                raise PredictorError(
                    409,
                    "no_previous_version",
                    f"model {name!r} has no earlier version to roll back to",
                )
            outcome["target"] = history[-1]
            return history

        self._cas(name, HISTORY_FILE, drop_current, "rollback")
        self._sync_current(name)
        return outcome["target"]

    # --- small objects beside a model (the canary state) -----------------
    def read_text(self, name: str, leaf: str) -> str | None:
        """A small object under the model's prefix (None when absent); last known on errors."""
        return self._read(f"{leaf}:{name}", leaf, lambda: self._get_text(name, leaf))

    def write_text(self, name: str, leaf: str, text: str | None) -> None:
        """Write (or delete, with None) a small object under the model's prefix."""
        key = self._key(name, leaf)
        try:
            if text is None:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            else:
                self._put(key, text.encode())
        except Exception as exc:
            raise self._write_error(leaf, exc) from exc
        self._seen.pop(f"{leaf}:{name}", None)

    # --- internals -------------------------------------------------------
    def _key(self, name: str, *parts: str) -> str:
        return self.prefix + "/".join((name, *parts))

    def _pages(self, prefix: str, delimiter: str | None = None) -> Any:
        kwargs = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        return self.client.get_paginator("list_objects_v2").paginate(**kwargs)

    def _read(self, cache_key: str, operation: str, fetch: Callable[[], T]) -> T:
        """``fetch()``, reused for READ_TTL_SECONDS; the last good answer when S3 fails."""
        now = time.monotonic()
        seen = self._seen.get(cache_key)
        if seen is not None and now - seen[0] < READ_TTL_SECONDS:
            return seen[1]
        if seen is not None and now < self._retry_at:
            return seen[1]  # S3 failed a moment ago: /readyz must not wait on its timeouts
        try:
            value = fetch()
        except Exception as exc:
            self._retry_at = time.monotonic() + RETRY_SECONDS
            self._failed(operation, exc)
            if seen is not None:
                return seen[1]
            raise PredictorError(
                503, "store_unavailable", f"model store {self.uri} unreachable: {exc}"
            ) from exc
        if operation in self._failing:
            self._failing.discard(operation)
            log.warning("model store %s reachable again (%s)", self.uri, operation)
        self._seen[cache_key] = (now, value)
        return value

    def _failed(self, operation: str, exc: BaseException) -> None:
        metrics.STORE_ERRORS.labels("s3", operation).inc()
        level = logging.DEBUG if operation in self._failing else logging.WARNING
        self._failing.add(operation)
        log.log(level, "model store %s: %s failed (%s); serving what is loaded", self.uri,
                operation, exc)  # fmt: skip

    def _write_error(self, operation: str, exc: BaseException) -> PredictorError:
        metrics.STORE_ERRORS.labels("s3", operation).inc()
        return PredictorError(
            503, "store_unavailable", f"cannot write to the model store {self.uri}: {exc}"
        )

    def _get_text(self, name: str, leaf: str) -> str | None:
        body = self._get_bytes(self._key(name, leaf), conditional=True)
        return None if body is None else body.decode()

    def _get_bytes(self, key: str, conditional: bool = False) -> bytes | None:
        """An object's body (None when absent); with ``conditional``, a 304 reuses the last."""
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        known = self._etags.get(key) if conditional else None
        if known is not None:
            kwargs["IfNoneMatch"] = known[0]
        try:
            reply = self.client.get_object(**kwargs)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 304 and known is not None:
                return known[1]
            if _code(exc) in {"NoSuchKey", "404", "NotFound"}:
                self._etags.pop(key, None)
                return None
            raise
        body = reply["Body"].read()
        if conditional:
            self._etags[key] = (reply["ETag"], body)
        return body

    def _fresh_text(self, name: str, leaf: str) -> str | None:
        try:
            return self._get_text(name, leaf)
        except Exception as exc:
            raise self._write_error(leaf, exc) from exc

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if _code(exc) in {"NoSuchKey", "404", "NotFound"}:
                return False
            raise

    def _put(
        self, key: str, body: bytes, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": body}
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        elif if_none_match:
            kwargs["IfNoneMatch"] = "*"
        try:
            return self.client.put_object(**kwargs)["ETag"]
        except ClientError as exc:
            if _code(exc) in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                raise _PreconditionFailed(key) from exc
            raise

    def _head(self, key: str) -> tuple[str | None, bytes | None]:
        """(etag, body) of an object read now, or (None, None) when absent."""
        from botocore.exceptions import ClientError

        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in {"NoSuchKey", "404", "NotFound"}:
                return None, None
            raise
        return reply["ETag"], reply["Body"].read()

    def _cas(
        self, name: str, leaf: str, change: Callable[[str | None], list[str]], operation: str
    ) -> list[str]:
        """Read-modify-write ``leaf`` until no concurrent writer got in between."""
        key = self._key(name, leaf)
        for attempt in range(CAS_ATTEMPTS):
            try:
                etag, body = self._head(key)
                lines = change(body.decode() if body is not None else None)
                text = "".join(line + "\n" for line in lines)
                self._put(key, text.encode(), if_match=etag, if_none_match=etag is None)
                self._forget(name)
                return lines
            except _PreconditionFailed:
                time.sleep(random.uniform(0, 0.005 * min(attempt + 1, 20)))
            except PredictorError:
                raise
            except Exception as exc:
                raise self._write_error(operation, exc) from exc
        raise PredictorError(
            503, "store_busy", f"{operation} of {name}: {CAS_ATTEMPTS} concurrent writers won"
        )

    def _sync_current(self, name: str) -> None:
        """Make ``current`` the last line of ``history``, compare-and-swap on current's ETag.

        Every writer syncs after changing the history, and a sync that lost the race
        re-reads both, so the last one to land always wrote the newest history's end.
        """
        key = self._key(name, CURRENT_FILE)
        for attempt in range(CAS_ATTEMPTS):
            try:
                etag, _ = self._head(key)
                history = _lines(self._head(self._key(name, HISTORY_FILE))[1])
                if not history:
                    return
                # A fresh nonce gives every write its own ETag (S3 ETags are content digests),
                # so a sync that read before another one landed always loses its If-Match.
                wanted = f"{history[-1]}\n# write {uuid.uuid4().hex}\n"
                self._put(key, wanted.encode(), if_match=etag, if_none_match=etag is None)
                self._forget(name)
                return
            except _PreconditionFailed:
                time.sleep(random.uniform(0, 0.005 * min(attempt + 1, 20)))
            except Exception as exc:
                raise self._write_error("promote", exc) from exc
        raise PredictorError(503, "store_busy", f"update of {name}/current kept losing races")

    def _forget(self, name: str) -> None:
        """Drop cached reads after this process wrote, so it reads its own writes."""
        for cache_key in list(self._seen):
            if cache_key == "names" or cache_key.endswith(f":{name}"):
                self._seen.pop(cache_key, None)


class _PreconditionFailed(Exception):
    """A conditional write lost the race (412)."""


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _first_line(text: str | None) -> str | None:
    for line in (text or "").splitlines():
        if line.strip() and not line.startswith("#"):
            return line.strip()
    return None


def _lines(text: str | bytes | None) -> list[str]:
    if text is None:
        return []
    if isinstance(text, bytes):
        text = text.decode()
    return [line.strip() for line in text.splitlines() if line.strip()]
