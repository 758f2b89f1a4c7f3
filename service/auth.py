"""Who may call a route, declared where the route is declared.

Every view carries one access class, set by a decorator next to its route::

    @bp.post("/predict")
    @access.api_key
    def predict(): ...

- ``public``: anyone (health, metadata, the web page, the documents);
- ``api_key``: a configured API key when ``PREDICTOR_API_KEYS`` is set, else open
  (the routes that spend model time);
- ``admin``: the admin token (``PREDICTOR_ADMIN_TOKEN``); with no token configured
  every call is refused, so those routes are off unless an operator turns them on.

The app refuses to start when a view declares none (``check_declared``), and the
HTTP layer enforces the class of the matched view before it runs.

Credentials come one way for both classes: ``Authorization: Bearer <secret>`` or
``X-API-Key: <secret>`` (``presented_secret``). API keys are configured hashed
(``id:sha256-hex`` entries), so the config never holds a usable secret; the
presented key is hashed and compared with every configured hash in constant time.
The key id (never the key) goes back in the ``X-API-Key-Id`` response header,
which nginx writes to its access log.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from .errors import PredictorError

KEY_ID_HEADER = "X-API-Key-Id"
TOKEN_VARIABLE = "PREDICTOR_ADMIN_TOKEN"
ATTRIBUTE = "predictor_access"

View = TypeVar("View", bound=Callable[..., object])


class Access(enum.StrEnum):
    PUBLIC = "public"
    API_KEY = "api_key"
    ADMIN = "admin"


def _declare(level: Access) -> Callable[[View], View]:
    def mark(view: View) -> View:
        setattr(view, ATTRIBUTE, level)
        return view

    return mark


public = _declare(Access.PUBLIC)
api_key = _declare(Access.API_KEY)
admin = _declare(Access.ADMIN)


def access_of(view: Callable[..., object] | None) -> Access | None:
    """The access class a view declared, or None."""
    return getattr(view, ATTRIBUTE, None)


def check_declared(views: Mapping[str, Callable[..., object]]) -> None:
    """Refuse to serve a view that declares no access class (a forgotten route stays shut)."""
    missing = sorted(endpoint for endpoint, view in views.items() if access_of(view) is None)
    if missing:
        raise RuntimeError(
            f"views without a declared access class (service/auth.py): {', '.join(missing)}"
        )


def presented_secret(headers: Mapping[str, str]) -> str | None:
    """The secret a client presents: ``X-API-Key``, else ``Authorization: Bearer``."""
    presented = headers.get("X-API-Key")
    if presented is not None and presented.strip():
        return presented.strip()
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


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


class AccessPolicy:
    """Enforces the declared access classes with the configured keys and admin token."""

    def __init__(self, api_keys: ApiKeys | None, admin_token: bytes | None) -> None:
        self.api_keys = api_keys
        self.admin_token = admin_token

    def check(self, level: Access, headers: Mapping[str, str]) -> str | None:
        """Raise a 401/403 PredictorError when the caller may not; return an API key id."""
        if level is Access.PUBLIC:
            return None
        if level is Access.API_KEY:
            return self._check_api_key(headers)
        self._check_admin(headers)
        return None

    def _check_api_key(self, headers: Mapping[str, str]) -> str | None:
        if self.api_keys is None:
            return None  # no keys configured: prediction routes are open
        presented = presented_secret(headers)
        if not presented:
            raise PredictorError(
                401,
                "unauthorized",
                "an API key is required: send Authorization: Bearer <key> or X-API-Key: <key>",
            )
        key_id = self.api_keys.identify(presented)
        if key_id is None:
            raise PredictorError(401, "unauthorized", "the API key is not valid")
        return key_id

    def _check_admin(self, headers: Mapping[str, str]) -> None:
        if not self.admin_token:
            raise PredictorError(
                403,
                "repository_disabled",
                f"the model repository API is disabled: set {TOKEN_VARIABLE} on the service "
                "to enable it",
            )
        presented = presented_secret(headers)
        if not presented:
            raise PredictorError(
                401, "unauthorized", "missing credentials: send Authorization: Bearer <admin token>"
            )
        if not hmac.compare_digest(presented.encode(), self.admin_token):
            raise PredictorError(403, "forbidden", "the admin token is not valid")
