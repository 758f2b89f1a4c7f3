"""Explain for the transports: the per-worker explainer cache, metrics and error mapping.

Explanations come from the scikit-learn estimator, never from the compiled
graph that serves predictions. When a model serves compiled, its estimator is
loaded on the first explain request through the same verifying loader as any
artifact (service/artifacts.py: digest, signature, skops allow-list; pickles
only when signed) and kept for that version in this worker only, so a
prediction never waits for it and a new version never reuses an old one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from flask import Flask

from .. import metrics
from ..artifacts import load_estimator
from ..errors import ArtifactRejected, PredictorError, bad_input
from ..models.loading import LoadedModel
from ..settings import Settings
from ..store import ModelStore
from . import ModelExplainer, RowExplanation, Unsupported

log = logging.getLogger("predictor.explain")
EXTENSION = "predictor.explain"
OUTPUT_KINDS = ("probability", "log_odds", "value")
VERSIONS_KEPT = 8  # explainers kept per worker (current + pinned versions of every model)


class Explanations:
    """Builds and caches one ``ModelExplainer`` per model version; answers rows."""

    def __init__(self, store: ModelStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._cache: OrderedDict[tuple[str, str, str], ModelExplainer | Unsupported] = OrderedDict()
        self._lock = threading.Lock()
        self._runner: ThreadPoolExecutor | None = None  # the niced explain thread (lazy)

    def explain(
        self, model: LoadedModel, rows: np.ndarray, output_kind: str | None = None
    ) -> list[RowExplanation]:
        """Explanations of validated rows in ``output_kind`` (None: the model's default);
        PredictorError (400, 413, 501, 422, 503) when none can be given."""
        start = time.perf_counter()
        method = "none"
        try:
            explainer = self.explainer(model)
            method = explainer.method
            answers = self._run(explainer.explain, rows, output_kind)
        except Unsupported as exc:
            metrics.EXPLAIN_REQUESTS.labels(model.name, method, "unsupported").inc()
            raise PredictorError(
                501, "explain_unsupported", f"model {model.name} version {model.version}: {exc}"
            ) from exc
        except PredictorError:
            metrics.EXPLAIN_REQUESTS.labels(model.name, method, "error").inc()
            raise
        except Exception as exc:
            # Rows passed the schema but the estimator refuses them (unseen category...).
            metrics.EXPLAIN_REQUESTS.labels(model.name, method, "bad_input").inc()
            raise PredictorError(
                422, "model_rejected_input", f"the model cannot explain these rows: {exc}"
            ) from exc
        metrics.EXPLAIN_REQUESTS.labels(model.name, method, "ok").inc()
        metrics.EXPLAIN_DURATION.labels(method).observe(time.perf_counter() - start)
        return answers

    def _run(self, fn: Any, *args: Any) -> Any:
        """Run ``fn`` in this worker's explain thread, niced by EXPLAIN_NICE: the request
        still waits for it, but on contended cores the scheduler serves predictions (in this
        and the other workers) first. One thread: a worker explains one request at a time."""
        if self.settings.EXPLAIN_NICE == 0:
            return fn(*args)
        if self._runner is None:
            with self._lock:
                if self._runner is None:
                    self._runner = ThreadPoolExecutor(
                        1,
                        "predictor-explain",
                        initializer=_nice,
                        initargs=(self.settings.EXPLAIN_NICE,),
                    )
        return self._runner.submit(fn, *args).result()

    def explainer(self, model: LoadedModel) -> ModelExplainer:
        """This version's explainer, built on first use; raises Unsupported (cached too)."""
        m = model.manifest
        key = (m.name, m.version, m.sha256)
        with self._lock:  # one load per version per worker, even under concurrent explains
            found = self._cache.get(key)
            if found is None:
                found = self._build(model)
                self._cache[key] = found
                while len(self._cache) > VERSIONS_KEPT:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(key)
        if isinstance(found, Unsupported):
            raise found
        return found

    def _build(self, model: LoadedModel) -> ModelExplainer | Unsupported:
        estimator = self._estimator(model)
        try:
            return ModelExplainer(estimator, model.manifest)
        except Unsupported as exc:
            return exc

    def _estimator(self, model: LoadedModel) -> Any:
        served = getattr(model.runtime, "estimator", None)
        if served is not None:  # the sklearn runtime already holds the verified estimator
            return served
        m = model.manifest
        try:
            return load_estimator(
                self.store.version_dir(m.name, m.version),
                m,
                self.settings.signing_key,
                self.settings.ALLOW_UNSIGNED_PICKLE,
            )
        except ArtifactRejected as exc:
            raise PredictorError(
                503,
                "estimator_refused",
                f"model {m.name} version {m.version}: its estimator cannot be loaded to explain "
                f"({exc.reason}: {exc})",
            ) from exc


def _nice(increment: int) -> None:
    """Lower this thread's CPU priority (Linux: nice is per thread); never raise it."""
    try:
        tid = threading.get_native_id()
        os.setpriority(
            os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment)
        )
    except (OSError, AttributeError) as exc:  # not Linux, or refused: explain at full priority
        log.warning("explain thread keeps its priority: %s", exc)


def explanations(app: Flask) -> Explanations:
    """The app's explainer cache (created with the first explain request of a worker)."""
    found = app.extensions.get(EXTENSION)
    if found is None:
        from ..state import state

        st = state(app)
        found = app.extensions.setdefault(EXTENSION, Explanations(st.store, st.settings))
    return found


def output_kind_of(payload: Any) -> str | None:
    """The optional ``output_kind`` of an explain request (V1 body, V2 output parameters)."""
    kind = payload.get("output_kind") if isinstance(payload, dict) else None
    if kind is not None and kind not in OUTPUT_KINDS:
        raise bad_input(
            "invalid_output_kind",
            f"output_kind must be one of {list(OUTPUT_KINDS)}, got {kind!r}"[:200],
        )
    return kind


def encode(model: LoadedModel, answers: list[RowExplanation]) -> list[dict[str, Any]]:
    """JSON rows: the prediction as :predict reports it (label names for classifiers)."""
    label_of = model.label_of
    out = []
    for a in answers:
        row: dict[str, Any] = {
            "prediction": label_of.get(a.prediction, str(a.prediction))
            if label_of
            else a.prediction,
            "output": a.output,
            "output_kind": a.output_kind,
            "base_value": a.base_value,
            "contributions": a.contributions,
            "method": a.method,
        }
        if a.probability is not None:
            row["probability"] = a.probability
        out.append(row)
    return out
