"""The exact explainers: closed form for linear models, TreeSHAP for tree ensembles.

Both work on the columns the final estimator sees (after the Pipeline's
preprocessing) and return, per row, the explained output, its base value and
one contribution per column, with ``base + sum(contributions) == output``.

- ``linear``: for a linear model f(z) = w.z + b in its link space (the value of
  a regressor, the log-odds/logit of a logistic regression), the exact SHAP
  values against a background with column means m are w_j (z_j - m_j), and the
  base value is w.m + b. Background: the manifest's sample rows.
- ``tree_shap``: shap's TreeExplainer (compiled C++) with
  ``feature_perturbation="tree_path_dependent"``: exact Shapley values of the
  trees' own conditional expectation (covers recorded at training), so no
  background is needed and the explained output is the model's raw output:
  the class probability for random forests, extra trees and decision trees
  (they average leaf class fractions), the log-odds for gradient boosting
  classifiers, the value for regressors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import Unsupported

LINEAR = "linear"
TREE_SHAP = "tree_shap"

_LINEAR_REGRESSORS = frozenset(
    {
        "LinearRegression",
        "Ridge",
        "RidgeCV",
        "Lasso",
        "LassoCV",
        "ElasticNet",
        "ElasticNetCV",
        "Lars",
        "LassoLars",
        "BayesianRidge",
        "ARDRegression",
        "HuberRegressor",
        "SGDRegressor",
        "TheilSenRegressor",
        "QuantileRegressor",
        "LinearSVR",
    }
)
_LINEAR_CLASSIFIERS = frozenset({"LogisticRegression", "LogisticRegressionCV"})
# Raw output of each tree family in shap's TreeExplainer, for classifiers.
_TREE_CLASSIFIERS = {
    "RandomForestClassifier": "probability",
    "ExtraTreesClassifier": "probability",
    "DecisionTreeClassifier": "probability",
    "GradientBoostingClassifier": "log_odds",
}
_TREE_REGRESSORS = frozenset(
    {
        "RandomForestRegressor",
        "ExtraTreesRegressor",
        "DecisionTreeRegressor",
        "GradientBoostingRegressor",
    }
)


@dataclass
class Raw:
    """Per row: explained output, its kind, base value, contributions per column."""

    output: np.ndarray  # [N]
    kind: str  # probability | log_odds | value
    base: np.ndarray  # [N]
    contributions: np.ndarray  # [N, F']
    method: str


def method_for(final: Any) -> str:
    """The method that explains ``final`` exactly; Unsupported naming why not."""
    kind = type(final).__name__
    if kind in _LINEAR_REGRESSORS or kind in _LINEAR_CLASSIFIERS:
        return LINEAR
    if kind in _TREE_REGRESSORS or kind in _TREE_CLASSIFIERS:
        return TREE_SHAP
    raise Unsupported(
        f"no exact explainer for {kind}: explanations are exact for linear models "
        f"({', '.join(sorted(_LINEAR_CLASSIFIERS | _LINEAR_REGRESSORS)[:4])}, ...) and tree "
        "ensembles (random forests, extra trees, gradient boosting, decision trees); "
        "a model-agnostic approximation is not offered"
    )


def explain_linear(final: Any, Z: np.ndarray, background: np.ndarray, k: np.ndarray | None) -> Raw:
    """Closed form in link space; ``k`` is the predicted class index per row (classifiers)."""
    coef = np.atleast_2d(np.asarray(final.coef_, dtype=float))
    intercept = np.atleast_1d(np.asarray(final.intercept_, dtype=float))
    mean = background.mean(axis=0)
    if k is None:  # regressor: one output
        w, b = coef[0], intercept[0]
        return Raw(Z @ w + b, "value", np.full(len(Z), mean @ w + b), w * (Z - mean), LINEAR)
    if coef.shape[0] == 1:
        # Binary: the model's logit is the log-odds of classes_[1]; of classes_[0] it is minus it.
        sign = np.where(k == 1, 1.0, -1.0)[:, None]
        w = sign * coef[0]
        b = sign[:, 0] * intercept[0]
    else:
        # Multinomial: the predicted class's logit (softmax of all logits = probabilities).
        w = coef[k]
        b = intercept[k]
    output = np.einsum("ij,ij->i", Z, w) + b
    base = w @ mean + b
    return Raw(output, "log_odds", base, w * (Z - mean), LINEAR)


def tree_explainer(final: Any) -> Any:
    """shap's TreeExplainer for ``final`` (built once per model version: it copies the trees)."""
    try:
        import shap  # optional extra [explain]; imported on the first tree explanation only
    except ImportError as exc:
        raise Unsupported(
            "tree explanations need shap: install predictor[explain] (the image has it)"
        ) from exc
    return shap.TreeExplainer(final, feature_perturbation="tree_path_dependent")


def explain_trees(explainer: Any, final: Any, Z: np.ndarray, k: np.ndarray | None) -> Raw:
    """TreeSHAP (path-dependent, exact) on the columns the trees see."""
    values = np.asarray(explainer.shap_values(Z, check_additivity=False), dtype=float)
    expected = np.atleast_1d(np.asarray(explainer.expected_value, dtype=float))
    rows = np.arange(len(Z))
    if k is None:
        return Raw(values.sum(1) + expected[0], "value", np.full(len(Z), expected[0]),
                   values, TREE_SHAP)  # fmt: skip
    kind = _TREE_CLASSIFIERS[type(final).__name__]
    if values.ndim == 3:  # [N, F', classes]
        contributions = values[rows, :, k]
        base = expected[k]
    else:  # binary gradient boosting: one log-odds, of classes_[1]
        sign = np.where(k == 1, 1.0, -1.0)
        contributions = values * sign[:, None]
        base = expected[0] * sign
    return Raw(base + contributions.sum(1), kind, base, contributions, TREE_SHAP)
