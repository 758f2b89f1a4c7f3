"""Exact Shapley values in probability space, by enumerating every coalition of features.

A logistic regression's (or gradient boosting's) probability is not additive in
its inputs, so its closed-form explanation lives in log-odds; a user who sees
"setosa, 97 %" expects the explanation of 97 %. With F input features there are
only 2**F coalitions (iris: 16), so the Shapley values of

    v(S) = mean over background rows b of  p_k(x on S, b elsewhere)

(interventional, against the manifest's background rows; p_k the probability of
the row's predicted class) are computed exactly: every coalition is evaluated
by the estimator itself, in one batched ``predict_proba``. By the efficiency of
Shapley values, ``v(empty) + sum(contributions) == p_k(x)`` exactly (up to float
rounding). The cost is ``2**F * len(background)`` model rows per explained row:
bounded by ``MAX_FEATURES`` and ``MAX_EVALUATIONS`` per request (413 above).

Coalitions are over the manifest's features, on the raw rows, so one-hot and
every other preprocessing step go through the pipeline untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from math import factorial

import numpy as np

EXACT_SHAPLEY = "exact_shapley"
MAX_FEATURES = 10  # 1,024 coalitions per row
MAX_BACKGROUND = 50  # background rows used (the first ones)
MAX_EVALUATIONS = 2_000_000  # model rows one request may cost
CHUNK = 65_536  # model rows per predict_proba call (bounds memory)


def coalitions(n_features: int) -> np.ndarray:
    """[2**F, F] booleans: row s has feature j present when bit j of s is set."""
    s = np.arange(2**n_features)[:, None]
    return ((s >> np.arange(n_features)) & 1).astype(bool)


def evaluations(n_rows: int, n_features: int, n_background: int) -> int:
    """Model rows needed to explain ``n_rows`` rows."""
    return n_rows * 2**n_features * min(n_background, MAX_BACKGROUND)


def coalition_values(
    probabilities: Callable[[np.ndarray], np.ndarray],
    rows: np.ndarray,
    background: np.ndarray,
    k: np.ndarray,
) -> np.ndarray:
    """[N, 2**F]: v(S) for every row and coalition (class ``k[i]`` for row i).

    ``probabilities`` maps validated rows [M, F] to predict_proba [M, C]."""
    background = background[:MAX_BACKGROUND]
    n, f = rows.shape
    masks = coalitions(f)
    m, b = len(masks), len(background)
    per_row = m * b
    values = np.empty((n, m))
    step = max(1, CHUNK // per_row)
    for start in range(0, n, step):
        part = rows[start : start + step]
        # [rows, coalitions, background, F]: x where the coalition has the feature, b elsewhere.
        mixed = np.where(masks[None, :, None, :], part[:, None, None, :], background[None, None])
        proba = probabilities(mixed.reshape(-1, f))
        classes = np.repeat(k[start : start + step], per_row)
        picked = proba[np.arange(len(classes)), classes].reshape(len(part), m, b)
        values[start : start + len(part)] = picked.mean(axis=2)
    return values


def shapley_from_values(values: np.ndarray, n_features: int) -> np.ndarray:
    """[N, F] Shapley values from v(S) [N, 2**F] (bit j of S = feature j present)."""
    masks = coalitions(n_features)
    sizes = masks.sum(axis=1)
    f = n_features
    weight = np.array([factorial(s) * factorial(f - s - 1) / factorial(f) for s in range(f)])
    out = np.empty((values.shape[0], f))
    for j in range(f):
        without = np.flatnonzero(~masks[:, j])  # coalitions S not holding j
        gain = values[:, without | (1 << j)] - values[:, without]
        out[:, j] = gain @ weight[sizes[without]]
    return out
