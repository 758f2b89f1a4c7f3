"""Typed settings, read from ``PREDICTOR_*`` environment variables.

Every field is documented where it is declared; README's settings table lists
the same names and defaults. Gunicorn's config, the CLI and the app all read
this one object, so a number that several places need is decided here once.
"""

from __future__ import annotations

import logging
import os
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import runtimes
from .secret_files import (
    SecretError,
    check_length,
    create_secret_file,
    default_signing_key_file,
    read_lines_file,
    read_secret_file,
)

log = logging.getLogger("predictor.settings")

__all__ = ["SecretError", "Settings"]


class Settings(BaseSettings):
    """All configuration of the service; env var = ``PREDICTOR_`` + field name."""

    model_config = SettingsConfigDict(env_prefix="PREDICTOR_", extra="ignore")

    MODEL_STORE: Path | str = Field(
        Path("models"),
        description="Root of the model store: a directory, or s3://BUCKET/PREFIX (AWS variables).",
    )
    STORE_CACHE_DIR: Path | None = Field(
        None,
        description="Local copies of versions served from an S3 store (default: under the "
        "temp directory).",
    )
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
        None,
        description="HMAC key (at least 32 bytes) that signs and verifies model versions.",
    )
    SIGNING_KEY_FILE: Path | None = Field(
        None,
        description="File holding the signing key; unset = ~/.config/predictor/signing.key "
        "when it exists (train-demo and publish create it).",
    )
    ALLOW_UNSIGNED: bool = Field(
        False,
        description="Serve versions without a signature when no signing key is configured "
        "(unsafe; warned at every start). Without it and without a key the service stops.",
    )
    ALLOW_UNSIGNED_PICKLE: bool = Field(
        False, description="Load joblib/pickle artifacts that carry no valid signature (unsafe)."
    )
    ADMIN_TOKEN: SecretStr | None = Field(
        None,
        description="Bearer token (at least 32 bytes) for the model repository routes; "
        "unset disables them.",
    )
    ADMIN_TOKEN_FILE: Path | None = Field(None, description="File holding the admin token.")
    API_KEYS: str | None = Field(
        None,
        description="Hashed API keys (id:sha256,...) required on prediction routes; unset = open.",
    )
    API_KEYS_FILE: Path | None = Field(None, description="File of id:sha256 lines (API keys).")
    WARM_VERSIONS: str = Field(
        "",
        description="Versions loaded besides each model's current one, e.g. "
        "iris@3,iris@4,*@latest:2 (the 2 newest of every model); others never load.",
    )

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

    @field_validator("MODEL_STORE")
    @classmethod
    def _check_store(cls, value: Path | str) -> Path | str:
        # An S3 URI stays a string: Path("s3://b/p") would be the local directory "s3:/b/p".
        text = str(value)
        if text.startswith("s3://"):
            return text
        if "://" in text:
            raise ValueError(f"{text!r}: expected a directory or s3://BUCKET[/PREFIX]")
        return Path(value)

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

    @field_validator("WARM_VERSIONS")
    @classmethod
    def _check_warm(cls, value: str) -> str:
        from .models.policy import WarmVersions

        WarmVersions.parse(value)
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
    LEAN_DISPATCH: bool = Field(
        True,
        description="Answer POST /predict, V1 predict and V2 infer without Flask's request "
        "machinery (same answers, headers, errors and metrics; ~250 µs less CPU per "
        "request in process). false = every route through Flask.",
    )
    EXPLAIN_NICE: int = Field(
        10,
        ge=0,
        le=19,
        description="Explanations run in one thread per worker at this nice value, so on busy "
        "cores predictions get the CPU first (0 = in the request thread, same priority).",
    )
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
        """The signing key: the variable, its file, or the local default file; None if none.

        Raises SecretError when a configured key is empty, unreadable or too short.
        """
        if self.SIGNING_KEY is not None and self.SIGNING_KEY.get_secret_value():
            return check_length(self.SIGNING_KEY.get_secret_value().encode(), "the signing key")
        path = self.signing_key_path()
        if path is None:
            return None
        return check_length(read_secret_file(path, "signing key"), f"the signing key in {path}")

    def signing_key_path(self) -> Path | None:
        """The key file in use: the configured one, else the local default when it exists."""
        if self.SIGNING_KEY_FILE is not None:
            return Path(self.SIGNING_KEY_FILE)
        default = default_signing_key_file()
        return default if default.exists() else None

    def publishing_key(self) -> bytes:
        """The key publishers sign with, creating the local default file when none is set."""
        key = self.signing_key
        if key is not None:
            return key
        path = Path(self.SIGNING_KEY_FILE or default_signing_key_file())
        if create_secret_file(path):
            log.warning("created a new signing key in %s (keep it out of version control)", path)
        return check_length(read_secret_file(path, "signing key"), f"the signing key in {path}")

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
        if self.ADMIN_TOKEN is not None and self.ADMIN_TOKEN.get_secret_value():
            return check_length(self.ADMIN_TOKEN.get_secret_value().encode(), "the admin token")
        if self.ADMIN_TOKEN_FILE is None:
            return None
        path = Path(self.ADMIN_TOKEN_FILE)
        return check_length(read_secret_file(path, "admin token"), f"the admin token in {path}")

    def check_secrets(self) -> list[str]:
        """Fail closed at start: raise SecretError (one line) for a broken secret.

        Returns the warnings to log at every start (unsafe opt-outs in force).
        """
        if self.API_KEYS_FILE is not None:
            read_lines_file(Path(self.API_KEYS_FILE), "API keys")
        elif (
            self.API_KEYS is not None
            and self.API_KEYS.strip()
            and not any(item.strip() for item in self.API_KEYS.replace("\n", ",").split(","))
        ):
            raise SecretError("PREDICTOR_API_KEYS is set but lists no key")
        _ = self.admin_token
        warnings = []
        if self.signing_key is None:
            if not self.ALLOW_UNSIGNED:
                raise SecretError(
                    "no signing key: set PREDICTOR_SIGNING_KEY_FILE (create one with "
                    "`predictor signing-key init`), or PREDICTOR_ALLOW_UNSIGNED=true to serve "
                    "an unsigned store"
                )
            warnings.append(
                "PREDICTOR_ALLOW_UNSIGNED is on and no signing key is set: versions load "
                "without signatures (skops allow-list only; anyone who can write the store "
                "chooses what is served)"
            )
        elif self.ALLOW_UNSIGNED:
            warnings.append("PREDICTOR_ALLOW_UNSIGNED is ignored: a signing key is set")
        if self.ALLOW_UNSIGNED_PICKLE:
            warnings.append(
                "PREDICTOR_ALLOW_UNSIGNED_PICKLE is on: an unsigned joblib/pickle version "
                "runs whatever code it holds when it loads"
            )
        return warnings

    def worker_count(self) -> int:
        """Workers to run: the setting, else one per CPU available to this process."""
        if self.WORKERS:
            return self.WORKERS
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - non-Linux
            return max(1, os.cpu_count() or 1)
