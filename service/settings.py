"""Typed settings, read from ``PREDICTOR_*`` environment variables.

Every field is documented where it is declared; README's settings table lists
the same names and defaults. Gunicorn's config, the CLI and the app all read
this one object, so a number that several places need is decided here once.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import runtimes


class Settings(BaseSettings):
    """All configuration of the service; env var = ``PREDICTOR_`` + field name."""

    model_config = SettingsConfigDict(env_prefix="PREDICTOR_", extra="ignore")

    MODEL_STORE: Path = Field(Path("models"), description="Root of the model store.")
    DEFAULT_MODEL: str = Field("iris", description="Model answered by the seed route /predict.")

    # --- cache -----------------------------------------------------------
    CACHE_ENABLED: bool = Field(True, description="Cache predictions per row.")
    REDIS_URL: str | None = Field(
        None, description="redis://host:port/db; unset means an in-process LRU cache."
    )
    REDIS_PASSWORD_FILE: Path | None = Field(
        None,
        description="File holding the Redis AUTH password (a mounted secret); empty or "
        "unreadable stops the service at start. A password in REDIS_URL works too.",
    )
    CACHE_TTL_SECONDS: int = Field(3600, ge=1, description="Lifetime of a cached prediction.")
    CACHE_MAX_ENTRIES: int = Field(100_000, ge=1, description="Size of the in-process LRU.")
    CACHE_NEAR_ENTRIES: int = Field(
        10_000, ge=0, description="Per-worker LRU in front of Redis (0 = Redis only)."
    )
    CACHE_SHARED_MIN_US: float = Field(
        250.0,
        ge=0,
        description="Use Redis only for models whose one-row prediction takes at least this "
        "many µs (measured at load); cheaper ones use the per-worker LRU. 0 = always.",
    )
    REDIS_TIMEOUT_MS: int = Field(
        20, ge=1, description="Connect and read timeout for each Redis call."
    )
    REDIS_RETRY_SECONDS: float = Field(
        2.0, gt=0, description="After a Redis failure, skip Redis for this long, then retry."
    )

    # --- limits ----------------------------------------------------------
    MAX_ROWS: int = Field(1000, ge=1, description="Most rows one request may carry (413 above).")
    MAX_BODY_BYTES: int = Field(
        1_048_576, ge=1024, description="Largest request body in bytes (413 above)."
    )

    # --- security --------------------------------------------------------
    SIGNING_KEY: SecretStr | None = Field(
        None, description="HMAC key that signs and verifies model artifacts."
    )
    SIGNING_KEY_FILE: Path | None = Field(None, description="File holding the signing key.")
    ALLOW_UNSIGNED_PICKLE: bool = Field(
        False, description="Load joblib/pickle artifacts that carry no valid signature (unsafe)."
    )
    ADMIN_TOKEN: SecretStr | None = Field(
        None, description="Bearer token for the model repository routes; unset disables them."
    )
    ADMIN_TOKEN_FILE: Path | None = Field(None, description="File holding the admin token.")
    API_KEYS: str | None = Field(
        None,
        description="Hashed API keys (id:sha256,...) required on prediction routes; unset = open.",
    )
    API_KEYS_FILE: Path | None = Field(None, description="File of id:sha256 lines (API keys).")

    # --- model updates ---------------------------------------------------
    POLL_INTERVAL_SECONDS: float = Field(
        1.0, gt=0, description="How often each worker checks the store for a new current version."
    )
    # Choices come from the runtime registry (service/runtimes/), checked when read.
    RUNTIME: str = Field(
        runtimes.AUTO,
        description="Runtime for every model: auto prefers a verified compiled graph; "
        f"or one of {', '.join(runtimes.names())}.",
    )
    RUNTIME_OVERRIDES: str = Field(
        "", description="Per-model runtime, e.g. iris=sklearn,iris-rf=onnx (beats RUNTIME)."
    )

    @field_validator("RUNTIME")
    @classmethod
    def _check_runtime(cls, value: str) -> str:
        if value not in runtimes.choices():
            raise ValueError(f"unknown runtime {value!r}: expected {'|'.join(runtimes.choices())}")
        return value

    @field_validator("RUNTIME_OVERRIDES")
    @classmethod
    def _check_overrides(cls, value: str) -> str:
        for item in filter(None, (i.strip() for i in value.split(","))):
            name, _, runtime = item.partition("=")
            if not name or runtime not in runtimes.choices():
                raise ValueError(f"{item!r}: expected model={'|'.join(runtimes.choices())}")
        return value

    def runtime_for(self, model: str) -> str:
        """The runtime setting that applies to ``model``."""
        for item in self.RUNTIME_OVERRIDES.split(","):
            name, _, runtime = item.strip().partition("=")
            if name == model and runtime in runtimes.choices():
                return runtime
        return self.RUNTIME

    # --- process ---------------------------------------------------------
    BIND: str = Field("127.0.0.1:8000", description="Address gunicorn listens on.")
    WORKERS: int | None = Field(None, ge=1, description="Gunicorn workers; default = CPU count.")
    THREADS: int = Field(1, ge=1, description="Threads per worker (gthread when above 1).")
    GRACEFUL_TIMEOUT: int = Field(
        20, ge=1, description="Seconds in-flight requests get to finish on shutdown."
    )
    DRAIN_SECONDS: float = Field(
        0.0,
        ge=0,
        description="After SIGTERM, readiness fails this long before the listener closes.",
    )
    MAX_REQUESTS: int = Field(
        0, ge=0, description="Recycle a worker after this many requests (0 = never)."
    )
    MAX_REQUESTS_JITTER: int = Field(0, ge=0, description="Random spread added to MAX_REQUESTS.")
    LOG_LEVEL: str = Field("info", description="Log level of the service.")

    # --- gRPC (Open Inference Protocol) ------------------------------------
    GRPC_BIND: str = Field(
        "127.0.0.1:8001",
        description="Address the gRPC Open Inference Protocol listens on; empty disables it.",
    )
    GRPC_WORKERS: int = Field(
        1, ge=1, description="gRPC server processes started beside the gunicorn workers."
    )
    GRPC_THREADS: int = Field(4, ge=1, description="Threads per gRPC server process.")

    @cached_property
    def signing_key(self) -> bytes | None:
        """The artifact signing key from the variable or its file, if any."""
        return _secret(self.SIGNING_KEY, self.SIGNING_KEY_FILE)

    @cached_property
    def redis_password(self) -> str | None:
        """The Redis AUTH password from its file; raises (fail closed) when empty or unreadable."""
        path = self.REDIS_PASSWORD_FILE
        if path is None:
            return None
        try:
            text = Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            message = f"PREDICTOR_REDIS_PASSWORD_FILE {path} cannot be read: {exc}"
            raise ValueError(message) from None
        if not text:
            raise ValueError(
                f"PREDICTOR_REDIS_PASSWORD_FILE {path} is empty: put the Redis password in it "
                "or unset the setting"
            )
        return text

    @cached_property
    def admin_token(self) -> bytes | None:
        """The admin bearer token from the variable or its file, if any."""
        return _secret(self.ADMIN_TOKEN, self.ADMIN_TOKEN_FILE)

    def worker_count(self) -> int:
        """Workers to run: the setting, else one per CPU available to this process."""
        if self.WORKERS:
            return self.WORKERS
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - non-Linux
            return max(1, os.cpu_count() or 1)


def _secret(value: SecretStr | None, path: Path | None) -> bytes | None:
    if value is not None and value.get_secret_value():
        return value.get_secret_value().encode()
    if path is not None:
        text = Path(path).read_text().strip()
        return text.encode() if text else None
    return None
