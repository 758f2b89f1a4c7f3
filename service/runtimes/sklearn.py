"""The scikit-learn runtime: calls the fitted estimator or Pipeline itself.

It serves every published version (the estimator artifact is always there),
so ``auto`` falls back to it when no compiled graph may serve. Loading it
deserialises the estimator: skops with the manifest's allow-list, or a pickle
only when signed (service/artifacts.py).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import Capabilities, Runtime, register

if TYPE_CHECKING:
    from ..manifest import Feature, Manifest
    from ..settings import Settings


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


@register
class SklearnRuntime(Runtime):
    """Calls the fitted scikit-learn estimator or Pipeline."""

    name = "sklearn"
    capabilities = Capabilities(
        probabilities=True, missing_values=True, needs_estimator=True, auto=True
    )

    def __init__(self, estimator: Any, manifest: Manifest) -> None:
        self.estimator = estimator
        self.features = manifest.features
        self.has_proba = manifest.task == "classification" and hasattr(estimator, "predict_proba")
        self._named = getattr(estimator, "feature_names_in_", None) is not None

    @classmethod
    def load(cls, version_dir: Path, manifest: Manifest, settings: Settings) -> SklearnRuntime:
        from ..artifacts import load_estimator  # skops / joblib: only when this runtime serves

        estimator = load_estimator(
            version_dir, manifest, settings.signing_key, settings.ALLOW_UNSIGNED_PICKLE
        )
        return cls(estimator, manifest)

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
