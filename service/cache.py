"""The prediction cache: Redis when configured, an in-process LRU otherwise.

Values are opaque bytes keyed by ``model:version:digest-of-row``. Redis is an
accelerator, never a dependency: every Redis call has a short timeout, and after
a failure the cache stops calling Redis for ``REDIS_RETRY_SECONDS`` (a circuit
breaker), so an outage costs a request at most one timeout and then nothing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

import orjson

from . import metrics
from .settings import Settings

log = logging.getLogger("predictor.cache")


class EntryCheck:
    """Decodes a cached value and checks it against the model's output shape.

    Anyone who can write to Redis can write any bytes under any key. A value is
    served only when it is what this model could have answered: ``[label, proba]``
    with the label one of the model's classes (a finite number for a regressor)
    and, when asked for, one finite probability in [0, 1] per class summing to 1.
    Anything else is a miss: answered from the model, counted, and overwritten.
    """

    PROBA_TOLERANCE = 1e-3  # float32 graphs sum to 1 within ~1e-6; poison is far off

    def __init__(self, name: str, classes: list[Any] | None, is_classifier: bool) -> None:
        self.name = name
        self.is_classifier = is_classifier
        self.classes = {_class_key(c) for c in classes or []}
        self.n_classes = len(classes or [])
        self._invalid = metrics.CACHE_INVALID.labels(name)
        self._logged_at = 0.0

    @classmethod
    def for_model(cls, model: Any) -> EntryCheck:
        """The check of a loaded model, built once and kept on it."""
        check = getattr(model, "_entry_check", None)
        if check is None:
            check = cls(model.name, model.manifest.classes, model.is_classifier)
            model._entry_check = check
        return check

    def decode(self, value: bytes, with_proba: bool) -> tuple[Any, list[float] | None] | None:
        """``(raw, proba)`` when the value is valid for this model, else None (a miss)."""
        try:
            entry = orjson.loads(value)
            if self._valid(entry, with_proba):
                return entry[0], entry[1]
            why = "does not match the model's outputs"
        except (orjson.JSONDecodeError, TypeError, ValueError):
            why = "is not JSON"
        self._invalid.inc()
        now = time.monotonic()
        if now - self._logged_at > 60:  # a flood of poison logs once a minute, not per row
            self._logged_at = now
            log.warning("model %s: a cached value %s; answered from the model", self.name, why)
        return None

    def _valid(self, entry: Any, with_proba: bool) -> bool:
        if not isinstance(entry, list) or len(entry) != 2:
            return False
        raw, proba = entry
        if self.is_classifier:
            if not _is_scalar(raw) or _class_key(raw) not in self.classes:
                return False
        elif not _finite_number(raw):
            return False
        if not with_proba:
            return proba is None
        if not isinstance(proba, list) or len(proba) != self.n_classes:
            return False
        if not all(_finite_number(p) and -1e-9 <= p <= 1 + 1e-9 for p in proba):
            return False
        return abs(math.fsum(proba) - 1.0) <= self.PROBA_TOLERANCE


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _class_key(value: Any) -> tuple[str, Any]:
    """A class value keyed by its type family: 1 and 1.0 match, True and "1" do not."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", float(value))
    return ("str", str(value))


class PredictionCache(Protocol):
    backend: str

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        """One value per key, None where absent (or the backend is unreachable)."""
        ...

    def set_many(self, items: dict[str, bytes]) -> None:
        """Store values with the configured TTL; failures are swallowed and counted."""
        ...


class LocalCache:
    """A thread-safe LRU with per-entry expiry, private to one worker process."""

    backend = "local"

    def __init__(self, max_entries: int, ttl_seconds: float) -> None:
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_seconds
        self._lock = threading.Lock()

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        now = time.monotonic()
        out: list[bytes | None] = []
        with self._lock:
            for key in keys:
                entry = self._data.get(key)
                if entry is None or entry[0] < now:
                    out.append(None)
                    continue
                self._data.move_to_end(key)
                out.append(entry[1])
        return out

    def set_many(self, items: dict[str, bytes]) -> None:
        expires = time.monotonic() + self._ttl
        with self._lock:
            for key, value in items.items():
                self._data[key] = (expires, value)
                self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)


class RedisCache:
    """Redis MGET / pipelined SET EX, behind a circuit breaker."""

    backend = "redis"

    def __init__(
        self,
        url: str,
        ttl_seconds: int,
        timeout_ms: int,
        retry_seconds: float,
        password: str | None = None,
    ) -> None:
        import redis

        timeout = timeout_ms / 1000
        self._client = redis.Redis.from_url(
            url,
            password=password,  # a password in the URL wins (redis-py's rule)
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry_on_timeout=False,
            retry=None,
            health_check_interval=0,
        )
        self._ttl = ttl_seconds
        self._retry_seconds = retry_seconds
        self._open_until = 0.0  # while now < this, Redis is not called
        self._errors = metrics.CACHE_ERRORS.labels("redis")
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._open_until

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        if not self.available:
            self._errors.inc()
            return [None] * len(keys)
        try:
            return self._client.mget(keys)
        except Exception as exc:
            self._trip(exc)
            return [None] * len(keys)

    def set_many(self, items: dict[str, bytes]) -> None:
        if not items:
            return
        if not self.available:
            self._errors.inc()
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, value in items.items():
                pipe.set(key, value, ex=self._ttl)
            pipe.execute()
        except Exception as exc:
            self._trip(exc)

    def _trip(self, exc: Exception) -> None:
        self._errors.inc()
        with self._lock:
            was_closed = self.available
            self._open_until = time.monotonic() + self._retry_seconds
        if was_closed:
            log.warning(
                "redis cache unreachable (%s: %s); answering from the model, retry in %.1fs",
                type(exc).__name__,
                exc,
                self._retry_seconds,
            )


class TieredCache:
    """A small per-worker LRU in front of Redis: a repeated row costs no round trip.

    Entries never go stale (keys carry model, version and digest), so the near tier
    needs no invalidation; it only bounds memory and keeps the TTL.
    """

    def __init__(self, near: LocalCache, far: RedisCache) -> None:
        self.near = near
        self.far = far
        self.backend = far.backend

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        found = self.near.get_many(keys)
        missing = [i for i, value in enumerate(found) if value is None]
        if not missing:
            return found
        remote = self.far.get_many([keys[i] for i in missing])
        promote = {}
        for i, value in zip(missing, remote, strict=True):
            if value is not None:
                found[i] = value
                promote[keys[i]] = value
        if promote:
            self.near.set_many(promote)
        return found

    def set_many(self, items: dict[str, bytes]) -> None:
        self.near.set_many(items)
        self.far.set_many(items)


def cache_from_settings(settings: Settings) -> PredictionCache | None:
    """The cache the settings ask for, or None when caching is off."""
    if not settings.CACHE_ENABLED:
        return None
    if settings.REDIS_URL:
        redis = RedisCache(
            settings.REDIS_URL,
            settings.CACHE_TTL_SECONDS,
            settings.REDIS_TIMEOUT_MS,
            settings.REDIS_RETRY_SECONDS,
            settings.redis_password,  # raises at start when its file is empty or unreadable
        )
        if settings.CACHE_NEAR_ENTRIES == 0:
            return redis
        return TieredCache(
            LocalCache(settings.CACHE_NEAR_ENTRIES, settings.CACHE_TTL_SECONDS), redis
        )
    return LocalCache(settings.CACHE_MAX_ENTRIES, settings.CACHE_TTL_SECONDS)
