"""Explanations: per-feature contributions that add up to the explained output.

``ModelExplainer`` is the explainer of one published version, built from its
scikit-learn estimator; ``explain`` answers validated rows (the same arrays
``:predict`` gets) with one ``RowExplanation`` each. Exact only: linear models
in closed form and tree ensembles by TreeSHAP (methods.py), and classifiers'
probabilities by enumerating every coalition of features (shapley.py) when the
model's own exact method lives in log-odds; anything else raises
``Unsupported`` naming why (the route answers 501). Every answer is checked:
``base_value + sum(contributions)`` must equal the estimator's own output
within ``TOLERANCE`` or nothing is answered.

Output kinds: a classifier is explained in ``probability`` of the predicted
class by default (the number ``:predict`` reports); ``log_odds`` is available
where the model's exact method gives it (logistic regression, gradient
boosting). Regressors: ``value``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import PredictorError, bad_input
from ..manifest import Manifest
from ..runtimes.sklearn import to_estimator_input
from ..validation import validate_rows
from .errors import Unsupported
from .features import column_sources, split_pipeline, sum_by_source
from .methods import (
    LINEAR,
    TREE_SHAP,
    Raw,
    explain_linear,
    explain_trees,
    method_for,
    tree_explainer,
)
from .shapley import (
    EXACT_SHAPLEY,
    MAX_BACKGROUND,
    MAX_EVALUATIONS,
    MAX_FEATURES,
    coalition_values,
    evaluations,
    shapley_from_values,
)

__all__ = [
    "TOLERANCE",
    "LINEAR",
    "TREE_SHAP",
    "EXACT_SHAPLEY",
    "ModelExplainer",
    "RowExplanation",
    "Unsupported",
]

TOLERANCE = 1e-6
# Classifiers whose predict() is classes_.take(argmax(predict_proba)) in scikit-learn itself.
_ARGMAX_PREDICT = frozenset(
    {"RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier"}
)


@dataclass
class RowExplanation:
    """One row's answer, as the routes encode it."""

    prediction: Any  # the class value (label mapping is the route's job) or the value
    output: float
    output_kind: str
    base_value: float
    contributions: list[float]  # one per manifest feature, in schema order
    method: str
    probability: float | None = None  # predicted class probability, as :predict reports it


class ModelExplainer:
    """Explains one model version from its fitted estimator (or Pipeline)."""

    def __init__(self, estimator: Any, manifest: Manifest) -> None:
        self.estimator = estimator
        self.manifest = manifest
        self.features = manifest.features
        self.pre, self.final = split_pipeline(estimator)
        self.method = method_for(self.final)  # Unsupported before anything else is done
        self.sources = column_sources(self.pre, len(self.features))
        self.is_classifier = manifest.task == "classification"
        self._background: np.ndarray | None = None
        self._raw_background: np.ndarray | None = None
        self._trees = None
        self._trees_refused: str | None = None  # why shap's TreeExplainer refused the model
        if self.method == TREE_SHAP:
            try:
                self._trees = tree_explainer(self.final)
            except Unsupported:
                raise
            except Exception as exc:  # e.g. multiclass gradient boosting
                self._trees_refused = (
                    f"shap's TreeExplainer refuses {type(self.final).__name__}: {exc}"
                )
        self.output_kinds = self._output_kinds()
        if not self.output_kinds:
            raise Unsupported(self._trees_refused or "no exact explainer")

    # --- public ----------------------------------------------------------
    def explain(self, rows: np.ndarray, output_kind: str | None = None) -> list[RowExplanation]:
        """One explanation per validated row, in ``output_kind`` (default: the first of
        ``output_kinds``); 400 for a kind this model does not offer, 413 past the budget of
        exact enumeration; raises Unsupported when an answer would not be exact."""
        kind = output_kind or self.output_kinds[0]
        if kind not in self.output_kinds:
            raise bad_input(
                "invalid_output_kind",
                f"output_kind {kind!r} is not available for model {self.manifest.name}; "
                f"available: {self.output_kinds}",
            )
        if kind == "probability" and self._enumerates_probability:
            return self._explain_enumerated(rows)
        return self._explain_native(rows)

    def _explain_native(self, rows: np.ndarray) -> list[RowExplanation]:
        """The model's own exact method (linear closed form, TreeSHAP), per column."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # feature-name warnings of sklearn
            X = to_estimator_input(self.estimator, self.features, rows)
            proba = (
                self.estimator.predict_proba(X)
                if self.is_classifier and hasattr(self.estimator, "predict_proba")
                else None
            )
            if proba is not None and type(self.final).__name__ in _ARGMAX_PREDICT:
                # Exactly what their predict() does: one pass over the trees, not two.
                predicted = np.asarray(self.estimator.classes_).take(np.argmax(proba, axis=1))
            else:
                predicted = self.estimator.predict(X)
            k = self._class_index(predicted) if self.is_classifier else None
            Z = self._transform(X)
            if self.method == LINEAR:
                raw = explain_linear(self.final, Z, self._background_columns(), k)
            else:
                raw = explain_trees(self._trees, self.final, Z, k)
            expected = self._model_output(raw, X, predicted, proba, k)
        contributions = sum_by_source(raw.contributions, self.sources, len(self.features))
        return self._answers(raw, contributions, expected, predicted, proba, k)

    def _explain_enumerated(self, rows: np.ndarray) -> list[RowExplanation]:
        """Probability of the predicted class: exact Shapley values over every coalition."""
        background = self._raw_background_rows()
        cost = evaluations(len(rows), len(self.features), len(background))
        if cost > MAX_EVALUATIONS:
            per_row = evaluations(1, len(self.features), len(background))
            raise PredictorError(
                413,
                "too_many_rows",
                f"explaining in probability space costs {per_row} model rows per row "
                f"(2**{len(self.features)} coalitions x {min(len(background), MAX_BACKGROUND)} "
                f"background "
                f"rows): send at most {MAX_EVALUATIONS // per_row} rows per request, or ask "
                f"output_kind {self.output_kinds[-1]!r}",
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            X = to_estimator_input(self.estimator, self.features, rows)
            predicted = self.estimator.predict(X)
            proba = self.estimator.predict_proba(X)
            k = self._class_index(predicted)
            values = coalition_values(self._probabilities, rows, background, k)
        contributions = shapley_from_values(values, len(self.features))
        expected = proba[np.arange(len(rows)), k]
        raw = Raw(values[:, -1], "probability", values[:, 0], contributions, EXACT_SHAPLEY)
        return self._answers(raw, contributions, expected, predicted, proba, k)

    def _answers(
        self,
        raw: Raw,
        contributions: np.ndarray,
        expected: np.ndarray,
        predicted: np.ndarray,
        proba: np.ndarray | None,
        k: np.ndarray | None,
    ) -> list[RowExplanation]:
        """Check additivity against the estimator's own output, then one answer per row."""
        total = raw.base + contributions.sum(axis=1)
        worst = float(np.max(np.abs(total - expected)))
        if not worst <= TOLERANCE:
            raise Unsupported(
                f"{raw.method} does not add up for this model (off by {worst:.3g} > {TOLERANCE}); "
                "refusing an inexact explanation"
            )
        out = []
        for i in range(len(predicted)):
            out.append(
                RowExplanation(
                    prediction=_plain(predicted[i]),
                    output=float(expected[i]),
                    output_kind=raw.kind,
                    base_value=float(raw.base[i]),
                    contributions=contributions[i].tolist(),
                    method=raw.method,
                    probability=None if proba is None else float(proba[i, k[i]]),
                )
            )
        return out

    # --- internals -------------------------------------------------------
    def _output_kinds(self) -> list[str]:
        """What this model can be explained in, the default first."""
        if not self.is_classifier:
            return [] if self._trees_refused else ["value"]
        enumerable = len(self.features) <= MAX_FEATURES and hasattr(self.estimator, "predict_proba")
        if self.method == LINEAR:
            return ["probability", "log_odds"] if enumerable else ["log_odds"]
        if type(self.final).__name__ == "GradientBoostingClassifier":
            native = [] if self._trees_refused else ["log_odds"]
            return (["probability"] if enumerable else []) + native
        if self._trees_refused:
            return []
        return ["probability"]  # forests and trees: TreeSHAP explains the probability itself

    @property
    def _enumerates_probability(self) -> bool:
        """Whether probabilities come from coalition enumeration (the native method gives
        log-odds: logistic regression, gradient boosting)."""
        return self.method == LINEAR or type(self.final).__name__ == "GradientBoostingClassifier"

    def _probabilities(self, rows: np.ndarray) -> np.ndarray:
        return self.estimator.predict_proba(to_estimator_input(self.estimator, self.features, rows))

    def _raw_background_rows(self) -> np.ndarray:
        """The manifest's sample rows, validated as requests are (coalitions mix them in)."""
        if self._raw_background is None:
            self._raw_background = validate_rows(self.manifest.sample_input, self.features, 10**6)
        return self._raw_background

    def _class_index(self, predicted: np.ndarray) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.final.classes_)}
        return np.array([index[p] for p in predicted.tolist()], dtype=int)

    def _transform(self, X: Any) -> np.ndarray:
        Z = X if self.pre is None else self.pre.transform(X)
        if hasattr(Z, "toarray"):
            Z = Z.toarray()
        return np.asarray(Z, dtype=float)

    def _background_columns(self) -> np.ndarray:
        """The manifest's sample rows (the user's own rows) as the final estimator sees them."""
        if self._background is None:
            rows = validate_rows(self.manifest.sample_input, self.features, 10**6)
            X = to_estimator_input(self.estimator, self.features, rows)
            self._background = self._transform(X)
        return self._background

    def _model_output(
        self, raw: Raw, X: Any, predicted: np.ndarray, proba: np.ndarray | None, k: Any
    ) -> np.ndarray:
        """The number explained, computed by the estimator itself (not by the explainer)."""
        rows = np.arange(len(predicted))
        if raw.kind == "value":
            return np.asarray(predicted, dtype=float)
        if raw.kind == "probability":
            assert proba is not None
            return proba[rows, k]
        scores = np.asarray(self.estimator.decision_function(X), dtype=float)
        if scores.ndim == 1:
            return np.where(k == 1, scores, -scores)
        return scores[rows, k]


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON encodes."""
    return value.item() if hasattr(value, "item") else value
