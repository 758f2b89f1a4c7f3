"""Our own exact TreeSHAP, only to measure shap's against (loadtests/explain_bench.py).

Path-dependent TreeSHAP, Algorithm 2 of Lundberg, Erion & Lee, "Consistent
Individualized Feature Attribution for Tree Ensembles" (2018): one walk of the
tree per row, carrying the unique path of features met so far with the share
of all coalitions that reach each node (``extend`` adds a feature, ``unwind``
removes one), so Shapley values of the tree's conditional expectation (covers
recorded at training) come out exactly in O(leaves x depth^2). This is what
``shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")``
computes, which service/explain/methods.py serves. Plain Python: the service
never imports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class _Path:
    """The unique path: feature index, zero fraction, one fraction, permutation weight."""

    __slots__ = ("d", "z", "o", "w")

    def __init__(self) -> None:
        self.d: list[int] = []
        self.z: list[float] = []
        self.o: list[float] = []
        self.w: list[float] = []

    def copy(self) -> _Path:
        p = _Path()
        p.d, p.z, p.o, p.w = self.d[:], self.z[:], self.o[:], self.w[:]
        return p


def _extend(m: _Path, pz: float, po: float, pi: int) -> None:
    n = len(m.d)
    m.d.append(pi)
    m.z.append(pz)
    m.o.append(po)
    m.w.append(1.0 if n == 0 else 0.0)
    for i in range(n - 1, -1, -1):
        m.w[i + 1] += po * m.w[i] * (i + 1) / (n + 1)
        m.w[i] = pz * m.w[i] * (n - i) / (n + 1)


def _unwind(m: _Path, i: int) -> _Path:
    """The path without element ``i`` (a copy)."""
    out = m.copy()
    n = len(m.d) - 1
    carry = out.w[n]
    o, z = m.o[i], m.z[i]
    for j in range(n - 1, -1, -1):
        if o != 0:
            t = out.w[j]
            out.w[j] = carry * (n + 1) / ((j + 1) * o)
            carry = t - out.w[j] * z * (n - j) / (n + 1)
        else:
            out.w[j] = out.w[j] * (n + 1) / (z * (n - j))
    for j in range(i, n):
        out.d[j], out.z[j], out.o[j] = out.d[j + 1], out.z[j + 1], out.o[j + 1]
    del out.d[n], out.z[n], out.o[n], out.w[n]
    return out


def _unwound_sum(m: _Path, i: int) -> float:
    """sum(_unwind(m, i).w) without building the copy."""
    n = len(m.d) - 1
    carry = m.w[n]
    o, z = m.o[i], m.z[i]
    total = 0.0
    for j in range(n - 1, -1, -1):
        if o != 0:
            t = carry * (n + 1) / ((j + 1) * o)
            total += t
            carry = m.w[j] - t * z * (n - j) / (n + 1)
        else:
            total += m.w[j] * (n + 1) / (z * (n - j))
    return total


class Tree:
    """One fitted scikit-learn tree as flat arrays (values per output column)."""

    def __init__(self, tree: Any) -> None:
        t = tree.tree_
        self.left = t.children_left.tolist()
        self.right = t.children_right.tolist()
        self.feature = t.feature.tolist()
        self.threshold = t.threshold.tolist()
        self.cover = t.weighted_n_node_samples.tolist()
        self.value = t.value[:, 0, :].astype(float)  # [nodes, classes] (fractions) or [nodes, 1]

    def shap(self, x: list[float], phi: np.ndarray) -> None:
        """Add this tree's Shapley values of row ``x`` to ``phi`` [features, outputs]."""
        self._recurse(0, _Path(), 1.0, 1.0, -1, x, phi)

    def _recurse(
        self, j: int, m: _Path, pz: float, po: float, pi: int, x: list[float], phi: np.ndarray
    ) -> None:
        m = m.copy()
        _extend(m, pz, po, pi)
        if self.left[j] == -1:  # a leaf
            for i in range(1, len(m.d)):
                w = _unwound_sum(m, i)
                phi[m.d[i]] += w * (m.o[i] - m.z[i]) * self.value[j]
            return
        d = self.feature[j]
        hot, cold = (
            (self.left[j], self.right[j])
            if x[d] <= self.threshold[j]
            else (self.right[j], self.left[j])
        )
        iz = io = 1.0
        if d in m.d[1:]:  # this feature was met higher up: undo it, then split again
            k = m.d.index(d, 1)
            iz, io = m.z[k], m.o[k]
            m = _unwind(m, k)
        cover = self.cover[j]
        self._recurse(hot, m, iz * self.cover[hot] / cover, io, d, x, phi)
        self._recurse(cold, m, iz * self.cover[cold] / cover, 0.0, d, x, phi)


class Forest:
    """A RandomForest / ExtraTrees / DecisionTree: the mean of its trees."""

    def __init__(self, model: Any) -> None:
        estimators = getattr(model, "estimators_", [model])
        self.trees = [Tree(e) for e in estimators]
        self.n_features = model.n_features_in_
        # Expected output: the root's value (cover-weighted mean of the leaves), averaged.
        self.expected_value = np.mean([t.value[0] for t in self.trees], axis=0)

    def shap_values(self, X: np.ndarray) -> np.ndarray:
        """[rows, features, outputs]: exact path-dependent Shapley values."""
        n_out = self.trees[0].value.shape[1]
        out = np.zeros((len(X), self.n_features, n_out))
        for r, row in enumerate(np.asarray(X, dtype=float).tolist()):
            for tree in self.trees:
                tree.shap(row, out[r])
        return out / len(self.trees)
