"""The data plane: what every transport asks of the service, answered once.

Seed ``/predict``, KServe V1, Open Inference Protocol (V2) REST, the model
repository, the web page and the health routes (and later gRPC) each decode
their request into one of these calls and encode the answer in their own shape;
none of them re-implements readiness, model lookup, metadata or the prediction
path. Nothing here knows about Flask or HTTP: arguments and answers are plain
values, failures are ``PredictorError`` (status, stable code, exact message),
which each transport turns into its protocol's error body.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import __version__, metrics
from .core import Prediction, PredictionCore
from .errors import PredictorError, not_found
from .manifest import Manifest
from .models.loading import LoadedModel
from .models.registry import ModelRegistry, ModelStatus
from .repository_sync import RepositorySync
from .settings import Settings
from .statistics import ModelStatistics, collect_statistics
from .store import ModelStore

SERVER_NAME = "predictor"
# Open Inference Protocol extensions this server implements (GET /v2 lists them).
EXTENSIONS = ("model_repository", "binary_tensor_data", "statistics")
# Set by the gunicorn master on SIGTERM (service/gunicorn_conf.py); every worker reads it.
DRAIN_FLAG_VARIABLE = "PREDICTOR_DRAIN_FLAG"
DRAINING_REASON = "the server is draining (shutting down): send requests elsewhere"


@dataclass(frozen=True, slots=True)
class Readiness:
    """The server's readiness: ``status`` is ready, not ready or draining."""

    ready: bool
    status: str
    models: list[dict[str, Any]] = field(default_factory=list)
    unavailable: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ModelReadiness:
    """Whether one model (or one pinned version) answers predictions now, and if not why."""

    name: str
    ready: bool
    version: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


class DataPlane:
    """Live, ready, metadata, model lookup, predict and the model repository, for every
    transport. One per app (one per gunicorn worker)."""

    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        registry: ModelRegistry,
        core: PredictionCore,
        sync: RepositorySync | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.core = core
        # Shares repository load/unload between workers; None when the repository API is off.
        self.sync = sync
        self._draining = False
        self._drain_flag = os.environ.get(DRAIN_FLAG_VARIABLE) or None
        self._request_metrics: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}

    # --- health ----------------------------------------------------------
    def live(self) -> bool:
        """The process answers (a worker that can run this code is alive)."""
        return True

    def begin_drain(self) -> None:
        """Fail readiness from now on in this process (the gunicorn master sets a flag file
        instead, which every worker sees)."""
        self._draining = True

    def draining(self) -> bool:
        if self._draining:
            return True
        return self._drain_flag is not None and os.path.exists(self._drain_flag)

    def ready(self) -> Readiness:
        """The one readiness rule every readiness route reports: not draining, at least one
        model serving, and every promoted model loaded (none refused at start)."""
        if self.draining():
            return Readiness(False, "draining")
        if not self.registry.ready():
            return Readiness(False, "not ready", [s.__dict__ for s in self.registry.status()])
        # Models that cannot serve (or serve an older version) never block readiness once
        # one serves: they are listed, not fatal.
        broken = [s.__dict__ for s in self.registry.status() if s.state != "READY" or s.reason]
        return Readiness(True, "ready", [m.describe() for m in self.registry.loaded()], broken)

    def model_ready(self, name: str, version: str | None = None) -> ModelReadiness:
        """Ready when this worker serves ``name`` (or can serve the pinned ``version``) and
        the server is not draining; 404 for an unknown model or version."""
        try:
            model = self.registry.get(name, version)
        except PredictorError as exc:
            if exc.status == 404:
                raise
            return ModelReadiness(name, False, version, exc.message)
        if self.draining():
            return ModelReadiness(model.name, False, model.version, DRAINING_REASON)
        return ModelReadiness(model.name, True, model.version)

    # --- metadata ----------------------------------------------------------
    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, __version__, EXTENSIONS)

    def model_names(self) -> list[str]:
        """Every model in the store, loaded or not."""
        return self.store.names()

    def versions(self, name: str) -> list[str]:
        return self.store.versions(name)

    def manifest(self, name: str, version: str | None = None) -> Manifest:
        """The manifest of ``version``, or of the version this worker serves (else the store's
        current one). Reads metadata only: never loads a model."""
        if version is not None:
            return self.store.manifest(name, version)
        try:
            return self.registry.get(name).manifest
        except PredictorError as exc:
            if exc.status == 404:
                raise
        current = self.store.current(name)
        if current is None:
            raise PredictorError(503, "model_not_ready", f"model {name!r} has no current version")
        return self.store.manifest(name, current)

    def store_problems(self, name: str) -> list[dict[str, str]]:
        """What is broken in the store for ``name``: its pointer, its versions' manifests."""
        out = []
        problem = self.store.problem(name)
        if problem is not None:
            out.append({"part": "current", "reason": problem.message})
        for version, reason in self.store.broken_versions(name).items():
            out.append({"part": "manifest", "version": version, "reason": reason})
        return out

    def describe_model(self, name: str, strict: bool = False) -> dict[str, Any]:
        """Everything a client wants to know about a model: versions, schema, labels, metrics.

        ``strict``: 404 for a model the store does not have (else an empty description)."""
        versions = self.store.versions(name)
        if strict and not versions:
            known = ", ".join(self.store.names()) or "none"
            raise not_found("model_not_found", f"model {name!r} not found; available: {known}")
        current = self.store.current(name)
        loaded = self.registry.serving(name)
        serving = loaded.manifest if loaded else None
        manifests = []
        for v in versions:
            try:
                manifests.append(self.store.manifest(name, v))
            except Exception:  # an unreadable manifest is listed, not fatal
                continue
        described = serving or next((m for m in manifests if m.version == current), None)
        refused = self.registry.refused(name)
        out: dict[str, Any] = {
            "name": name,
            "ready": loaded is not None,
            "current_version": current,
            "serving_version": loaded.version if loaded else None,
            "runtime": loaded.runtime.name if loaded else None,
            "runtime_reason": loaded.runtime_reason if loaded else None,
            "versions": [
                {
                    "version": m.version,
                    "current": m.version == current,
                    "created": m.created.isoformat(),
                    "estimator": m.estimator,
                    "metrics": m.metrics,
                    "sklearn_version": m.sklearn_version,  # trained with (in the artifact)
                    "serving_sklearn_version": _serving_sklearn(),
                    "compiled": m.compiled.model_dump(exclude_unset=True) if m.compiled else None,
                }
                for m in manifests
            ],
        }
        if refused:
            out["refused"] = {"version": refused[0], "reason": refused[1]}
        problems = self.store_problems(name)
        if problems:
            out["problems"] = problems
        if described is not None:
            out.update(
                task=described.task,
                estimator=described.estimator,
                features=[f.model_dump(exclude_none=True) for f in described.features],
                sklearn_version=described.sklearn_version,
                serving_sklearn_version=_serving_sklearn(),
                classes=described.classes,  # what predictions answer
                output_labels=described.output_labels,  # display names, in classes order
                metrics=described.metrics,
                sample_input=described.sample_input,
                description=described.description,
            )
        return out

    # --- prediction --------------------------------------------------------
    @property
    def caching(self) -> bool:
        """Whether answers say where they came from (a cache is configured)."""
        return self.core.cache is not None

    def model(self, name: str, version: str | None = None) -> LoadedModel:
        """The model that answers ``name`` (``version`` pins one): 404 unknown, 503 not loaded.
        Transports decode their rows against ``model.manifest.features``."""
        return self.registry.get(name, version)

    def predict(self, model: LoadedModel, rows: np.ndarray, with_proba: bool = False) -> Prediction:
        """Validated rows in, the answer out: cache policy, runtime and metrics (prediction
        core), plus the per-model request counters the statistics extension reports."""
        success, failure, count_rows, last = self._bound_metrics(model)
        start = time.perf_counter()
        try:
            result = self.core.predict(model, rows, with_proba)
        except Exception:
            failure.observe(time.perf_counter() - start)
            raise
        success.observe(time.perf_counter() - start)
        count_rows.inc(result.rows)
        last.set(time.time())
        return result

    def statistics(
        self, name: str | None = None, version: str | None = None
    ) -> list[ModelStatistics]:
        """Request counts and times per model version, summed over every worker; 404 for an
        unknown model or version. Without a name: every model."""
        if name is not None:
            if version is not None:
                self.store.manifest(name, version)  # 404s
            elif name not in self.store.names():
                known = ", ".join(self.store.names()) or "none"
                raise not_found("model_not_found", f"model {name!r} not found; available: {known}")
        served = [(m.name, m.version) for m in self.registry.loaded()]
        return collect_statistics(served, name, version)

    def _bound_metrics(self, model: LoadedModel) -> tuple[Any, Any, Any, Any]:
        key = (model.name, model.version)
        bound = self._request_metrics.get(key)
        if bound is None:  # .labels() is not free: bind once per version
            bound = self._request_metrics[key] = (
                metrics.MODEL_REQUEST_DURATION.labels(model.name, model.version, "success"),
                metrics.MODEL_REQUEST_DURATION.labels(model.name, model.version, "fail"),
                metrics.MODEL_ROWS.labels(model.name, model.version),
                metrics.MODEL_LAST_REQUEST.labels(model.name, model.version),
            )
        return bound

    # --- model repository ----------------------------------------------------
    def catch_up(self) -> None:
        """Apply the load/unload calls other workers answered (one ``stat`` when none)."""
        if self.sync is not None:
            self.sync.apply(self.registry)

    def repository_index(self, ready_only: bool = False) -> list[ModelStatus]:
        return [s for s in self.registry.status() if not ready_only or s.state == "READY"]

    def load_model(self, name: str, version: str | None = None) -> LoadedModel:
        """Load (or reload) the current version of ``name`` in every worker; with ``version``,
        make that version servable (pinned) beside the current one (the version policy)."""
        if version is not None:
            model = self.registry.pin(name, version)
            if self.sync is not None:
                self.sync.record_pin(name, version, pinned=True)
            return model
        model = self.registry.load(name)
        if self.sync is not None:
            self.sync.record(name, unloaded=False)
        return model

    def unload_model(self, name: str, version: str | None = None) -> None:
        """Stop serving ``name`` (or only its pinned ``version``) in every worker."""
        if version is not None:
            self.registry.unpin(name, version)
            if self.sync is not None:
                self.sync.record_pin(name, version, pinned=False)
            return
        self.registry.unload(name)
        if self.sync is not None:
            self.sync.record(name, unloaded=True)


def _serving_sklearn() -> str:
    import sklearn

    return sklearn.__version__
