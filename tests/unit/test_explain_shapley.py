"""Exact Shapley values by coalition enumeration, and our reference TreeSHAP against shap."""

from __future__ import annotations

from itertools import permutations

import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from loadtests.own_treeshap import Forest
from service.explain.methods import tree_explainer
from service.explain.shapley import coalitions, shapley_from_values


def test_enumeration_equals_the_average_over_every_ordering():
    """A game with interactions (not additive): the closed weights equal the definition."""
    rng = np.random.default_rng(0)
    n = 5
    masks = coalitions(n)
    table = rng.normal(size=2**n)  # v(S) arbitrary for every coalition S
    table[0] = 0.0
    phi = shapley_from_values(table[None, :], n)[0]
    want = np.zeros(n)
    orders = list(permutations(range(n)))
    index = {tuple(m): i for i, m in enumerate(masks.tolist())}
    for order in orders:
        present = [False] * n
        for j in order:
            before = table[index[tuple(present)]]
            present[j] = True
            want[j] += table[index[tuple(present)]] - before
    np.testing.assert_allclose(phi, want / len(orders), atol=1e-12)
    assert abs(phi.sum() - (table[-1] - table[0])) <= 1e-12  # efficiency


def test_reference_treeshap_equals_shap():
    X, y = make_classification(n_samples=300, n_features=6, n_classes=3, n_informative=4,
                               random_state=0)  # fmt: skip
    model = RandomForestClassifier(n_estimators=5, max_depth=5, random_state=0).fit(X, y)
    mine = Forest(model).shap_values(X[:5])
    theirs = np.asarray(tree_explainer(model).shap_values(X[:5], check_additivity=False))
    assert np.abs(mine - theirs).max() <= 1e-12
