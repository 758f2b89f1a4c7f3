"""The prediction core every protocol calls: cache lookup, runtime, cache store, metrics.

Transports decode their own request shape into (model, validated rows, whether
probabilities are wanted), call ``PredictionCore.predict`` and encode the
``Prediction`` back; none of them knows which runtime or cache answered.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from .cache import EntryCheck, PredictionCache, TieredCache
from .errors import PredictorError
from .models.loading import LoadedModel


@dataclass(slots=True)
class Prediction:
    """The answer for a batch, in row order."""

    model: LoadedModel
    raw: list[Any]  # raw estimator outputs (class values or floats)
    proba: list[list[float]] | None  # class probabilities, in manifest class order
    cache_hits: int
    rows: int
    cached: bool = True  # False when the cache was skipped for this request

    @property
    def values(self) -> list[Any]:
        """What ``estimator.predict`` answers: the model's own class values, or numbers.

        Display names never replace a class (see labels.py): every protocol answers
        the same value for the same row.
        """
        return self.raw

    def proba_by_label(self) -> list[dict[str, float]] | None:
        """Probabilities per row, keyed by each class's JSON text (``labels.class_key``)."""
        if self.proba is None:
            return None
        keys = self.model.proba_keys
        return [dict(zip(keys, row, strict=True)) for row in self.proba]

    @property
    def cache_status(self) -> str:
        if not self.cached:
            return "bypass"
        if self.cache_hits == self.rows:
            return "hit"
        return "partial" if self.cache_hits else "miss"


# Measured CPU of keying, looking up and storing one row in a per-worker LRU (~4-6 µs).
CACHE_ROW_COST_US = 6.0


class PredictionCore:
    """Answers validated rows for a loaded model, through the cache."""

    def __init__(self, cache: PredictionCache | None, shared_min_us: float = 0.0) -> None:
        self.cache = cache
        # A model cheaper than a Redis round trip is cached per worker only (see settings).
        self._near_only = cache.near if isinstance(cache, TieredCache) else None
        self.shared_min_us = shared_min_us

    def predict(self, model: LoadedModel, rows: np.ndarray, with_proba: bool = False) -> Prediction:
        n = len(rows)
        model.m_rows.observe(n)
        with_proba = with_proba and model.is_classifier
        cache = self.cache
        if cache is not None and model.inference_us < self.shared_min_us:
            # Cheaper than a Redis round trip: this worker's LRU at most, and not even that
            # when keying and storing the rows would cost more than predicting them.
            cache = self._near_only if self._near_only is not None else cache
            if model.predict_cost_us(n) < n * CACHE_ROW_COST_US:
                cache = None
        if cache is None:
            raw, proba = self._run(model, rows, with_proba)
            self._count(model, raw)
            return Prediction(model, raw, proba, 0, n, cached=False)

        keys = _row_keys(model.cache_prefix + ("P:" if with_proba else "V:"), rows)
        found = cache.get_many(keys)
        check = EntryCheck.for_model(model)  # a poisoned or garbage value is a miss
        decoded = [None if v is None else check.decode(v, with_proba) for v in found]
        missing = [i for i, value in enumerate(decoded) if value is None]
        hits = n - len(missing)
        if hits:
            model.m_hits.inc(hits)
        if not missing:
            raw = [d[0] for d in decoded]  # type: ignore[index]
            proba = [d[1] for d in decoded] if with_proba else None  # type: ignore[index]
            self._count(model, raw)
            return Prediction(model, raw, proba, hits, n)

        model.m_misses.inc(len(missing))
        todo = rows if hits == 0 else rows[missing]
        new_raw, new_proba = self._run(model, todo, with_proba)
        fresh = {
            keys[i]: orjson.dumps([new_raw[j], new_proba[j] if new_proba else None])
            for j, i in enumerate(missing)
        }
        cache.set_many(fresh)
        if hits == 0:
            raw, proba = new_raw, new_proba
        else:
            raw = [None] * n
            proba = [None] * n if with_proba else None  # type: ignore[assignment]
            for j, i in enumerate(missing):
                raw[i] = new_raw[j]
                if proba is not None:
                    proba[i] = new_proba[j]  # type: ignore[index]
            for i, d in enumerate(decoded):
                if d is not None:
                    raw[i] = d[0]
                    if proba is not None:
                        proba[i] = d[1]
        self._count(model, raw)
        return Prediction(model, raw, proba, hits, n)

    @staticmethod
    def _run(
        model: LoadedModel, rows: np.ndarray, with_proba: bool
    ) -> tuple[list[Any], list[list[float]] | None]:
        start = time.perf_counter()
        try:
            predictions, proba = model.runtime.run(rows, with_proba)
        except Exception as exc:
            # Rows passed the schema but the model refuses them (e.g. an unseen category
            # with handle_unknown="error"): the client's input, not a server fault.
            raise PredictorError(
                422, "model_rejected_input", f"the model cannot predict these rows: {exc}"
            ) from exc
        model.m_inference.observe(time.perf_counter() - start)
        return predictions.tolist(), (proba.tolist() if proba is not None else None)

    @staticmethod
    def _count(model: LoadedModel, raw: list[Any]) -> None:
        if model.m_values is not None:
            for value in raw:
                model.m_values.observe(value)
            return
        label_of = model.label_of
        if len(raw) == 1:
            child = model.m_label.get(label_of.get(raw[0], ""))
            if child is not None:
                child.inc()
            return
        # Counted by each value's text, as a label is matched (1 and 1.0 stay apart);
        # Counter over str() is ~3x cheaper than np.unique of the text array for 100 rows.
        by_label = {str(k): v for k, v in label_of.items()}
        for value, count in Counter(map(str, raw)).items():
            child = model.m_label.get(by_label.get(value, ""))
            if child is not None:
                child.inc(count)


def _row_keys(prefix: str, rows: np.ndarray) -> list[str]:
    """One key per row: the digest of the row's canonical bytes (float64 or JSON)."""
    if rows.dtype == object:
        return [
            prefix + hashlib.blake2b(orjson.dumps(row.tolist()), digest_size=16).hexdigest()
            for row in rows
        ]
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    return [prefix + hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in rows]
