"""Model runtimes: one interface, whatever executes the model.

The prediction core hands a runtime the validated 2-D array and gets back raw
predictions (and class probabilities on request). ``SklearnRuntime`` calls the
estimator; the compiled ONNX runtime (onnx_runtime.py) implements the same
``run``.
"""

from __future__ import annotations

import warnings
from typing import Any, Protocol

import numpy as np

from .manifest import Feature, Manifest


class ModelRuntime(Protocol):
    name: str

    def run(self, rows: np.ndarray, with_proba: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions for each row, and class probabilities when asked and available."""
        ...


def to_estimator_input(estimator: Any, features: list[Feature], rows: Any) -> Any:
    """Rows as the estimator was fitted: a DataFrame when it knows feature names."""
    if getattr(estimator, "feature_names_in_", None) is not None:
        import pandas as pd

        frame = pd.DataFrame(np.asarray(rows, dtype=object), columns=[f.name for f in features])
        for f in features:
            if f.type == "float":
                frame[f.name] = frame[f.name].astype(float)
            elif f.type in ("int", "bool"):
                column = frame[f.name].astype(float)
                # A missing value keeps the column float (NaN), as pandas reads such data.
                if not column.isna().any():
                    column = column.astype("int64" if f.type == "int" else bool)
                frame[f.name] = column
        return frame
    array = np.asarray(rows)
    if array.dtype == object and all(f.type != "string" for f in features):
        array = array.astype(float)
    return array


class SklearnRuntime:
    """Calls the fitted scikit-learn estimator or Pipeline."""

    name = "sklearn"
    reason = ""  # why a compiled graph does not serve instead (set by the registry)

    def __init__(self, estimator: Any, manifest: Manifest) -> None:
        self.estimator = estimator
        self.features = manifest.features
        self.has_proba = manifest.task == "classification" and hasattr(estimator, "predict_proba")
        self._named = getattr(estimator, "feature_names_in_", None) is not None

    def run(self, rows: np.ndarray, with_proba: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if not self._named:
            return self._call(rows, with_proba)
        X = to_estimator_input(self.estimator, self.features, rows)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self._call(X, with_proba)

    def _call(self, X: Any, with_proba: bool) -> tuple[np.ndarray, np.ndarray | None]:
        predictions = self.estimator.predict(X)
        if with_proba and self.has_proba:
            return predictions, self.estimator.predict_proba(X)
        return predictions, None
