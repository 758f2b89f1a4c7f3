"""Optional API keys for the prediction routes.

Keys are configured hashed (``id:sha256-hex`` entries), so the config never
holds a usable secret; a client sends its key as ``Authorization: Bearer <key>``
or ``X-API-Key: <key>``. The presented key is hashed and compared with every
configured hash in constant time. The key id (never the key) goes back in the
``X-API-Key-Id`` response header, which nginx writes to its access log.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from flask import request

from .errors import PredictorError

KEY_ID_HEADER = "X-API-Key-Id"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def is_prediction_request(method: str, path: str) -> bool:
    """The routes that spend model time (seed, V1 ``:predict``/``:explain``, V2 ``/infer``),
    and every version-pinned route (``.../versions/{v}...``, metadata and ready included)."""
    if path.startswith(("/v1/models/", "/v2/models/")) and "/versions/" in path:
        return True
    return method == "POST" and (
        path == "/predict"
        or path.endswith(":predict")
        or path.endswith(":explain")
        or path.endswith("/infer")
    )


class ApiKeys:
    """The configured key hashes by id."""

    def __init__(self, entries: dict[str, str]) -> None:
        self._hashes = list(entries.items())

    @classmethod
    def parse(cls, text: str | None, path: Path | None = None) -> ApiKeys | None:
        """From ``id:hash,id:hash`` (and/or a file of such lines); None when none configured."""
        items = []
        if text:
            items += text.replace("\n", ",").split(",")
        if path is not None:
            items += Path(path).read_text().splitlines()
        entries: dict[str, str] = {}
        for raw in items:
            item = raw.strip()
            if not item or item.startswith("#"):
                continue
            key_id, _, digest = item.partition(":")
            digest = digest.strip().lower()
            if not key_id or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(
                    f"API key entry {key_id or item!r}: expected id:sha256-hex "
                    "(create one with `predictor api-key new ID`)"
                )
            entries[key_id.strip()] = digest
        return cls(entries) if entries else None

    def identify(self, presented: str) -> str | None:
        """The id of the key, or None; every configured hash is compared, in constant time."""
        digest = hash_key(presented)
        found = None
        for key_id, expected in self._hashes:
            if hmac.compare_digest(digest, expected):
                found = key_id
        return found

    def check_request(self) -> str:
        """The caller's key id, or a 401 saying what is missing or wrong."""
        presented = request.headers.get("X-API-Key")
        if presented is None:
            auth = request.headers.get("Authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                presented = token.strip()
        if not presented:
            raise PredictorError(
                401,
                "unauthorized",
                "an API key is required: send Authorization: Bearer <key> or X-API-Key: <key>",
            )
        key_id = self.identify(presented)
        if key_id is None:
            raise PredictorError(401, "unauthorized", "the API key is not valid")
        return key_id
