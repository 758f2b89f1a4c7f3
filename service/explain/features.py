"""Which input feature each column the final estimator sees came from.

A Pipeline's preprocessing turns the manifest's F features into F' columns
(one-hot encoding expands a string feature into one column per category).
An explanation is computed on those F' columns, then summed back to the F
features, so every step must keep each output column tied to one input
feature. Steps that mix features (PCA, PolynomialFeatures, ...) cannot be
attributed that way: they are refused with their name, never approximated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import Unsupported

# Steps whose every output column is a function of one input column, keeping the count.
_PER_COLUMN = frozenset(
    {
        "StandardScaler",
        "MinMaxScaler",
        "MaxAbsScaler",
        "RobustScaler",
        "QuantileTransformer",
        "PowerTransformer",
        "OrdinalEncoder",
        "TargetEncoder",
        "Binarizer",
    }
)


def split_pipeline(estimator: Any) -> tuple[Any | None, Any]:
    """(preprocessing or None, final estimator) of a Pipeline or a bare estimator."""
    steps = getattr(estimator, "steps", None)
    if not steps:
        return None, estimator
    final = steps[-1][1]
    if len(steps) == 1:
        return None, final
    return estimator[:-1], final


def column_sources(preprocessing: Any | None, n_features: int) -> np.ndarray:
    """For each column the final estimator sees, the index of its input feature."""
    sources = np.arange(n_features)
    if preprocessing is None:
        return sources
    for name, step in preprocessing.steps:
        sources = _through(step, sources, name)
    return sources


def _through(step: Any, sources: np.ndarray, name: str) -> np.ndarray:
    """Map ``sources`` (one entry per input column of ``step``) to its output columns."""
    if step is None or step == "passthrough":
        return sources
    if step == "drop":
        return sources[:0]
    kind = type(step).__name__
    if kind == "ColumnTransformer":
        return _column_transformer(step, sources)
    if kind == "Pipeline":
        for inner_name, inner in step.steps:
            sources = _through(inner, sources, f"{name}/{inner_name}")
        return sources
    if kind == "OneHotEncoder":
        widths = []
        for i, categories in enumerate(step.categories_):
            width = len(categories)
            drop = getattr(step, "drop_idx_", None)
            if drop is not None and drop[i] is not None:
                width -= 1
            widths.append(width)
        if getattr(step, "_infrequent_enabled", False):
            raise Unsupported(f"step {name!r}: OneHotEncoder with infrequent categories")
        return np.repeat(sources, widths)
    if kind == "SimpleImputer":
        if getattr(step, "add_indicator", False):
            raise Unsupported(f"step {name!r}: SimpleImputer(add_indicator=True)")
        # Columns that were all missing at fit are dropped by the imputer.
        stats = np.asarray(step.statistics_)
        kept = np.ones(len(sources), bool)
        if stats.dtype.kind == "f" and not getattr(step, "keep_empty_features", False):
            kept = ~np.isnan(stats)
        return sources[kept]
    if kind == "KBinsDiscretizer":
        if step.encode == "ordinal":
            return sources
        return np.repeat(sources, step.n_bins_)
    if kind in _PER_COLUMN:
        return sources
    raise Unsupported(
        f"step {name!r} ({kind}) is not known to keep each output column tied to one input "
        "feature, so its contributions cannot be summed back to the manifest's features"
    )


def _column_transformer(ct: Any, sources: np.ndarray) -> np.ndarray:
    width = sum(s.stop - s.start for s in ct.output_indices_.values())
    out = np.full(width, -1)
    names_in = list(getattr(ct, "feature_names_in_", []))
    for name, transformer, columns in ct.transformers_:
        where = ct.output_indices_[name]
        if where.stop == where.start:
            continue  # dropped, or nothing selected
        picked = sources[_column_indices(columns, names_in, len(sources))]
        mapped = _through(transformer, picked, name)
        if len(mapped) != where.stop - where.start:
            raise Unsupported(
                f"transformer {name!r}: {where.stop - where.start} output columns, "
                f"{len(mapped)} attributed"
            )
        out[where] = mapped
    if (out < 0).any():
        raise Unsupported("ColumnTransformer: some output columns have no source feature")
    return out


def _column_indices(columns: Any, names_in: list[str], n: int) -> np.ndarray:
    if callable(columns):
        raise Unsupported("ColumnTransformer with a callable column selector")
    if isinstance(columns, str | int):
        columns = [columns]
    if isinstance(columns, slice):
        return np.arange(n)[columns]
    columns = list(columns)
    if columns and isinstance(columns[0], bool | np.bool_):
        return np.flatnonzero(columns)
    return np.array([names_in.index(c) if isinstance(c, str) else int(c) for c in columns], int)


def sum_by_source(values: np.ndarray, sources: np.ndarray, n_features: int) -> np.ndarray:
    """[N, F'] contributions per column -> [N, F] per input feature."""
    out = np.zeros((values.shape[0], n_features))
    for j, source in enumerate(sources):
        out[:, source] += values[:, j]
    return out
