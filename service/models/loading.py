"""Loading one model version: verify, pick its runtime, smoke-test, time it.

``load_model`` is everything between a version in the store and a
``LoadedModel`` the registry may swap in: it reads the manifest, lets
runtimes/selection.py choose and load the runtime (which verifies what it
reads), predicts the manifest's sample input, and measures what one row and
each further row cost (the prediction core weighs that against caching).
Any failure is an ``ArtifactRejected`` with the reason; nothing is swapped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import metrics
from ..errors import ArtifactRejected, PredictorError
from ..labels import class_key
from ..manifest import Manifest
from ..runtimes import Runtime
from ..runtimes.selection import build_runtime
from ..settings import Settings
from ..store import ModelStore, StoreEntryBroken
from ..validation import validate_rows


@dataclass
class LoadedModel:
    """One verified model version, ready to predict."""

    manifest: Manifest
    runtime: Runtime
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
        # Display names per class, for metric labels only: answers are the classes themselves.
        classes = m.classes or []
        self.labels: list[str] = (
            list(m.output_labels)
            if m.output_labels and len(m.output_labels) == len(classes)
            else [class_key(c) for c in classes]
        )
        self.label_of: dict[Any, str] = dict(zip(classes, self.labels, strict=True))
        self.proba_keys: list[str] = [class_key(c) for c in classes]
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
        return self.runtime.reason

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {"name": m.name, "version": m.version, "runtime": self.runtime.name}


def load_model(store: ModelStore, name: str, version: str, settings: Settings) -> LoadedModel:
    """Verify, deserialise and smoke-test one version; raises ArtifactRejected."""
    try:
        manifest = store.manifest(name, version)
    except StoreEntryBroken as exc:  # its own reason: bad_manifest (FIFO, not UTF-8, ...)
        raise ArtifactRejected(exc.kind, exc.message) from exc
    except PredictorError as exc:
        raise ArtifactRejected("missing_version", exc.message) from exc
    except Exception as exc:
        raise ArtifactRejected("bad_manifest", f"manifest unreadable: {exc}") from exc
    version_dir = store.version_dir(name, version)
    runtime = build_runtime(version_dir, manifest, settings)
    model = LoadedModel(manifest, runtime)
    smoke_test(model)
    model.inference_us, model.row_us = time_rows(model)
    return model


def time_rows(model: LoadedModel, batch: int = 64, repeats: int = 7) -> tuple[float, float]:
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


def smoke_test(model: LoadedModel) -> None:
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
