"""The models this process serves, and how a new version replaces an old one.

Each worker holds one ``LoadedModel`` per name (its current version), plus a
few pinned versions loaded on demand. ``refresh`` notices a new ``current`` in
the store, loads it off the request path, verifies it and smoke-tests it on the
manifest's sample input, then swaps it in with one reference assignment; a
version that fails any step is refused, counted and logged, and the old one
keeps serving.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics
from .artifacts import artifact_path, check_digest, check_signature, load_estimator
from .canary import CanaryRouter
from .errors import ArtifactRejected, PredictorError, not_found
from .manifest import Manifest
from .runtime import ModelRuntime, SklearnRuntime
from .settings import Settings
from .store import ModelStore
from .validation import validate_rows

log = logging.getLogger("predictor.registry")

PINNED_VERSIONS_KEPT = 4


@dataclass
class LoadedModel:
    """One verified model version, ready to predict."""

    manifest: Manifest
    runtime: ModelRuntime
    loaded_at: float = field(default_factory=time.time)
    inference_us: float = 0.0  # median single-row prediction time, measured at load
    row_us: float = 0.0  # median cost of each further row in a batch, measured at load

    def predict_cost_us(self, rows: int) -> float:
        """Expected µs for the runtime to predict ``rows`` rows in one call."""
        return self.inference_us + (rows - 1) * self.row_us

    def __post_init__(self) -> None:
        m = self.manifest
        self.name, self.version = m.name, m.version
        self.is_classifier = m.task == "classification"
        # Cache keys carry name, version and digest: a new version never reads old answers.
        self.cache_prefix = f"p:{m.name}:{m.version}:{m.sha256[:12]}:"
        self.label_of: dict[Any, str] = (
            dict(zip(m.classes, m.output_labels, strict=True))
            if m.classes and m.output_labels
            else {}
        )
        self.labels: list[str] = list(m.output_labels or [])
        # Metric children bound once: .labels() lookups are not free on the hot path.
        self.m_inference = metrics.INFERENCE_DURATION.labels(m.name, m.version, self.runtime.name)
        self.m_rows = metrics.REQUEST_ROWS.labels(m.name)
        self.m_hits = metrics.CACHE_HITS.labels(m.name)
        self.m_misses = metrics.CACHE_MISSES.labels(m.name)
        self.m_values = (
            None if self.is_classifier else metrics.PREDICTION_VALUES.labels(m.name, m.version)
        )
        self.m_label = {
            label: metrics.PREDICTIONS.labels(m.name, m.version, label) for label in self.labels
        }

    @property
    def runtime_reason(self) -> str:
        """Why the compiled graph does not serve (empty when it does)."""
        return getattr(self.runtime, "reason", "")

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {"name": m.name, "version": m.version, "runtime": self.runtime.name}


@dataclass
class ModelStatus:
    """What the repository index reports for a model name."""

    name: str
    version: str | None
    state: str  # READY | UNAVAILABLE | LOADING
    reason: str = ""


class ModelRegistry:
    """Loads, serves and hot-swaps the versions of every model in one store."""

    def __init__(self, store: ModelStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._current: dict[str, LoadedModel] = {}
        self._pinned: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._refused: dict[str, tuple[str, str]] = {}  # name -> (version, reason)
        self._unloaded: set[str] = set()
        self._lock = threading.RLock()
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.publish_metrics = False  # True in serving workers (set by start_watcher)
        self.canary = CanaryRouter(self)  # the share of unpinned requests a candidate gets

    # --- serving ---------------------------------------------------------
    def get(self, name: str, version: str | None = None) -> LoadedModel:
        """The model to answer with; 404 when unknown, 503 when known but not loaded."""
        loaded = self._current.get(name)
        if version is None or (loaded is not None and loaded.version == version):
            if loaded is not None:
                return self.canary.pick(name, loaded) if version is None else loaded
            return self._not_loaded(name)
        return self._pinned_version(name, version)

    def names(self) -> list[str]:
        return sorted(self._current)

    def serving(self, name: str) -> LoadedModel | None:
        """The version of ``name`` this worker serves now, if any."""
        return self._current.get(name)

    def loaded(self) -> list[LoadedModel]:
        return [self._current[n] for n in sorted(self._current)]

    def ready(self) -> bool:
        """Ready when at least one model serves and every promoted model is loaded."""
        if not self._current:
            return False
        return all(
            name in self._current or name in self._unloaded
            for name in self.store.names()
            if self.store.current(name)
        )

    def status(self) -> list[ModelStatus]:
        out = []
        for name in self.store.names():
            loaded = self._current.get(name)
            if loaded is not None:
                out.append(ModelStatus(name, loaded.version, "READY"))
            elif name in self._unloaded:
                out.append(ModelStatus(name, self.store.current(name), "UNAVAILABLE", "unloaded"))
            else:
                version, reason = self._refused.get(name, (self.store.current(name), ""))
                out.append(
                    ModelStatus(name, version, "UNAVAILABLE", reason or "no current version")
                )
        return out

    def refused(self, name: str) -> tuple[str, str] | None:
        return self._refused.get(name)

    # --- loading ---------------------------------------------------------
    def load_version(self, name: str, version: str) -> LoadedModel:
        """Verify, deserialise and smoke-test one version; raises ArtifactRejected."""
        try:
            manifest = self.store.manifest(name, version)
        except PredictorError as exc:
            raise ArtifactRejected("missing_version", exc.message) from exc
        except Exception as exc:
            raise ArtifactRejected("bad_manifest", f"manifest unreadable: {exc}") from exc
        version_dir = self.store.version_dir(name, version)
        runtime = build_runtime(version_dir, manifest, self.settings)
        model = LoadedModel(manifest, runtime)
        _smoke_test(model)
        model.inference_us, model.row_us = _time_rows(model)
        return model

    def load_all(self) -> None:
        """Load the current version of every model in the store (at start)."""
        for name in self.store.names():
            if self.store.current(name):
                self.refresh_model(name)
        self.canary.refresh()

    def refresh(self) -> None:
        """Swap in any model whose ``current`` changed; called by the watcher."""
        for name in self.store.names():
            if name not in self._unloaded:
                self.refresh_model(name)
        self.canary.refresh()

    def refresh_model(self, name: str, force: bool = False) -> bool:
        """Load the store's current version of ``name`` if it is not serving; True if swapped."""
        wanted = self.store.current(name)
        loaded = self._current.get(name)
        if wanted is None or (loaded is not None and loaded.version == wanted and not force):
            return False
        if not force and self._refused.get(name, ("", ""))[0] == wanted:
            return False  # already refused this version; wait for the next promotion
        with self._lock:
            try:
                model = self.load_version(name, wanted)
            except ArtifactRejected as exc:
                self._refuse(name, wanted, exc, serving=loaded)
                return False
            except Exception as exc:  # anything else a broken artifact can throw
                self._refuse(name, wanted, ArtifactRejected("load_error", str(exc)), loaded)
                return False
            self._current[name] = model
            self._refused.pop(name, None)
            self._unloaded.discard(name)
        metrics.MODEL_LOADS.labels(name, wanted).inc()
        if self.publish_metrics:
            if loaded is not None:  # multiprocess files keep old series: zero it, don't drop it
                _info_gauge(loaded).set(0)
            _info_gauge(model).set(1)
        log.info(
            "model %s version %s serving (runtime %s, pid %d)%s",
            name, wanted, model.runtime.name, os.getpid(),
            f", replacing version {loaded.version}" if loaded else "",
        )  # fmt: skip
        return True

    def unload(self, name: str) -> None:
        if name not in self.store.names():
            raise not_found("model_not_found", f"model {name!r} not found in the store")
        with self._lock:
            loaded = self._current.pop(name, None)
            self._unloaded.add(name)
        if loaded is not None and self.publish_metrics:
            _info_gauge(loaded).set(0)

    def load(self, name: str) -> LoadedModel:
        """Load (or reload) the current version of ``name``; raises when refused."""
        if name not in self.store.names():
            raise not_found("model_not_found", f"model {name!r} not found in the store")
        if not self.store.current(name):
            raise PredictorError(
                409, "no_current_version", f"model {name!r} has no current version"
            )
        self._unloaded.discard(name)
        self._refused.pop(name, None)
        self.refresh_model(name, force=name not in self._current)
        if name not in self._current:
            version, reason = self._refused.get(name, ("?", "unknown"))
            raise PredictorError(
                422, "model_refused", f"model {name} version {version} refused: {reason}"
            )
        return self._current[name]

    # --- background ------------------------------------------------------
    def start_watcher(self) -> None:
        """Start polling the store in this process (call after fork, in each worker)."""
        self.publish_metrics = True
        for model in self._current.values():
            _info_gauge(model).set(1)
        if self._watcher is not None:
            return
        self._watcher = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        self._watcher.start()
        if self.settings.REDIS_URL:
            from .notify import listen

            threading.Thread(
                target=listen,
                args=(self.settings.REDIS_URL, self._wake.set, self._stop),
                name="model-notices",
                daemon=True,
            ).start()

    def stop_watcher(self) -> None:
        self._stop.set()
        self._wake.set()

    def _watch(self) -> None:
        # Wake on a Redis notice (notify.py) or after one poll interval, whichever comes first.
        while not self._stop.is_set():
            self._wake.wait(self.settings.POLL_INTERVAL_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
            except Exception:  # the watcher must outlive a bad store read
                log.exception("model store refresh failed")

    # --- internals -------------------------------------------------------
    def _refuse(
        self, name: str, version: str, exc: ArtifactRejected, serving: LoadedModel | None
    ) -> None:
        self._refused[name] = (version, f"{exc.reason}: {exc}")
        metrics.MODEL_LOAD_FAILURES.labels(name, version, exc.reason).inc()
        log.error(
            "model %s version %s refused (%s: %s); %s",
            name, version, exc.reason, exc,
            f"version {serving.version} keeps serving" if serving else "nothing serves it",
        )  # fmt: skip

    def _not_loaded(self, name: str) -> LoadedModel:
        if name not in self.store.names():
            known = ", ".join(self.names()) or "none"
            raise not_found("model_not_found", f"model {name!r} not found; available: {known}")
        refused = self._refused.get(name)
        reason = f": version {refused[0]} refused ({refused[1]})" if refused else ""
        if name in self._unloaded:
            reason = ": it was unloaded"
        raise PredictorError(503, "model_not_ready", f"model {name!r} is not loaded{reason}")

    def _pinned_version(self, name: str, version: str) -> LoadedModel:
        key = (name, version)
        with self._lock:
            model = self._pinned.get(key)
            if model is not None:
                self._pinned.move_to_end(key)
                return model
        self.store.manifest(name, version)  # 404s for unknown model or version
        try:
            model = self.load_version(name, version)
        except ArtifactRejected as exc:
            raise PredictorError(
                503, "model_not_ready", f"model {name} version {version} refused: {exc}"
            ) from exc
        with self._lock:
            self._pinned[key] = model
            while len(self._pinned) > PINNED_VERSIONS_KEPT:
                self._pinned.popitem(last=False)
        return model


def build_runtime(version_dir: Path, manifest: Manifest, settings: Settings) -> ModelRuntime:
    """The runtime a version serves with.

    ``auto`` serves the verified ONNX graph when there is one (the estimator is then
    never unpickled at all) and scikit-learn otherwise; ``onnx`` refuses a version
    without a usable graph; ``sklearn`` always loads the estimator.
    """
    wanted = settings.runtime_for(manifest.name)
    if wanted != "sklearn":
        usable, why = compiled_graph_usable(manifest)
        if usable:
            return _onnx_runtime(version_dir, manifest, settings)
        if wanted == "onnx":
            raise ArtifactRejected("no_compiled_graph", f"runtime onnx forced, but {why}")
        fallback_reason = why
    else:
        fallback_reason = "runtime sklearn chosen by settings"
    estimator = load_estimator(
        version_dir, manifest, settings.signing_key, settings.ALLOW_UNSIGNED_PICKLE
    )
    runtime = SklearnRuntime(estimator, manifest)
    runtime.reason = fallback_reason
    return runtime


def compiled_graph_usable(manifest: Manifest) -> tuple[bool, str]:
    """Whether the manifest's compiled graph may serve, and if not, why."""
    record = manifest.compiled
    if not record:
        return False, "no compiled graph was published"
    if not record.get("ok") or not record.get("sha256"):
        return False, f"the graph failed verification at publish: {record.get('reason')}"
    from .compiled import runtime_version

    if record.get("runtime_version") != runtime_version():
        return False, (
            f"the graph was verified with {record.get('runtime_version')}, "
            f"this service runs {runtime_version()}"
        )
    return True, ""


def _onnx_runtime(version_dir: Path, manifest: Manifest, settings: Settings) -> ModelRuntime:
    from .onnx_runtime import OnnxRuntime

    record = manifest.compiled or {}
    path = artifact_path(version_dir, manifest, record.get("artifact", "model.onnx"))
    check_digest(path, record["sha256"])
    check_signature(manifest, settings.signing_key)
    return OnnxRuntime(
        path.read_bytes(), manifest.features, manifest.task, manifest.classes, intra_op_threads=1
    )


def _time_rows(model: LoadedModel, batch: int = 64, repeats: int = 7) -> tuple[float, float]:
    """Median µs of a one-row call, and the marginal µs per extra row in a batch.

    The prediction core compares these with what caching costs to decide whether a
    cache (shared or per worker) pays off for a request.
    """
    features = model.manifest.features
    one = validate_rows(model.manifest.sample_input[:1], features, 1)
    many = np.repeat(one, batch, axis=0)

    def median_us(rows: np.ndarray) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.runtime.run(rows, with_proba=False)
            times.append(time.perf_counter() - start)
        return sorted(times)[repeats // 2] * 1e6

    single = median_us(one)
    return single, max(0.0, (median_us(many) - single) / (batch - 1))


def _smoke_test(model: LoadedModel) -> None:
    """Predict the manifest's sample input; a version that cannot answer never serves."""
    try:
        rows = validate_rows(model.manifest.sample_input, model.manifest.features, 10**6)
        predictions, _ = model.runtime.run(rows, with_proba=model.is_classifier)
    except PredictorError as exc:
        raise ArtifactRejected("smoke_test_failed", f"sample input invalid: {exc.message}") from exc
    except Exception as exc:
        raise ArtifactRejected("smoke_test_failed", f"sample prediction failed: {exc}") from exc
    if len(predictions) != len(rows):
        raise ArtifactRejected("smoke_test_failed", "sample prediction returned the wrong shape")
    if not model.is_classifier and not np.all(np.isfinite(np.asarray(predictions, dtype=float))):
        raise ArtifactRejected("smoke_test_failed", "sample prediction is not finite")


def _info_labels(model: LoadedModel) -> tuple[str, str, str, str, str]:
    m = model.manifest
    return (m.name, m.version, m.sha256[:12], model.runtime.name, model.runtime_reason)


def _info_gauge(model: LoadedModel) -> Any:
    return metrics.MODEL_INFO.labels(*_info_labels(model))
