"""The rows a compiled graph is verified on: the user's own data and its distribution.

A graph may serve only after it answered exactly what the estimator answers on
the held-out rows, on all of ``--data`` (up to ``MAX_DATA_ROWS``), and on at
least ``SYNTHETIC_ROWS`` synthetic rows drawn per feature from the data's own
values: numbers resampled and jittered within the observed range, strings among
the recorded categories (plus unseen ones where the estimator ignores unknown
categories), missing values at the observed rate (``PROBE_MISSING_RATE`` where
only the estimator, not the data, says a feature is nullable). Rows are in the
validated form the service hands a runtime.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import orjson

from .manifest import Feature

MAX_DATA_ROWS = 100_000
SYNTHETIC_ROWS = 100_000
UNSEEN_RATE = 0.02
PROBE_MISSING_RATE = 0.05
JITTER = 0.05  # of the feature's observed spread
UNSEEN_CATEGORY = "\x00unseen-category"


def validated(rows: list[list[Any]], features: list[Feature]) -> np.ndarray:
    """JSON rows (``None`` for missing) as validation hands them to a runtime."""
    if all(f.type != "string" for f in features):
        return np.array(
            [[np.nan if v is None else float(v) for v in row] for row in rows], dtype=np.float64
        ).reshape(len(rows), len(features))
    array = np.empty((len(rows), len(features)), dtype=object)
    if rows:
        array[:] = [[np.nan if v is None else v for v in row] for row in rows]
    return array


def ignores_unknown(estimator: Any, features: list[Feature], row: list[Any]) -> bool:
    """True when the estimator predicts a row whose string values it never saw."""
    from .runtimes.sklearn import to_estimator_input

    probe = [
        UNSEEN_CATEGORY if f.type == "string" else v for f, v in zip(features, row, strict=True)
    ]
    if probe == row:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator.predict(to_estimator_input(estimator, features, [probe]))
    except Exception:
        return False
    return True


def synthetic_rows(
    features: list[Feature],
    data: np.ndarray,
    n: int,
    rng: np.random.Generator,
    unseen: bool = False,
) -> np.ndarray:
    """``n`` rows drawn per feature from ``data``'s own values (validated form)."""
    columns: list[np.ndarray] = []
    for j, f in enumerate(features):
        column = data[:, j] if len(data) else np.array([])
        if f.type == "string":
            present = np.array([v for v in column if isinstance(v, str)], dtype=object)
            pool = present if len(present) else np.array(f.categories or ["?"], dtype=object)
            # Every recorded category appears, the rest follow the data's frequencies.
            cats = np.array(f.categories or [], dtype=object)
            drawn = pool[rng.integers(0, len(pool), n)]
            if len(cats):
                uniform = rng.random(n) < 0.1
                drawn[uniform] = cats[rng.integers(0, len(cats), int(uniform.sum()))]
            if unseen:
                drawn[rng.random(n) < UNSEEN_RATE] = UNSEEN_CATEGORY
            out = drawn.astype(object)
        else:
            values = column.astype(np.float64) if len(column) else np.array([], dtype=np.float64)
            values = values[~np.isnan(values)]
            if not len(values):
                low = f.minimum if f.minimum is not None else 0.0
                high = f.maximum if f.maximum is not None else low
                values = np.array([low, high])
            low, high = float(values.min()), float(values.max())
            out = values[rng.integers(0, len(values), n)]
            if f.type == "float":
                spread = (high - low) * JITTER
                out = np.clip(out + rng.uniform(-spread, spread, n), low, high)
            elif f.type == "int":
                out = np.clip(out + rng.integers(-1, 2, n), low, high)
            out = out.astype(np.float64)
        if f.nullable:
            rate = f.missing_rate or PROBE_MISSING_RATE
            gaps = rng.random(n) < rate
            out = out.astype(object) if f.type == "string" else out
            out[gaps] = np.nan
        columns.append(out)
    if all(f.type != "string" for f in features):
        return np.column_stack(columns) if columns else np.empty((n, 0))
    array = np.empty((n, len(features)), dtype=object)
    for j, column in enumerate(columns):
        array[:, j] = column
    return array


def distinct_synthetic_rows(
    features: list[Feature],
    data: np.ndarray,
    n: int,
    rng: np.random.Generator,
    unseen: bool = False,
    exclude: list[np.ndarray] | None = None,
    rounds: int = 6,
) -> np.ndarray:
    """At least ``n`` synthetic rows that differ from each other and from ``exclude``
    (when the features allow that many; a few bools cannot), drawn in rounds."""
    taken: set[bytes] = set()
    for block in exclude or []:
        taken.update(_row_keys(block))
    kept: list[np.ndarray] = []
    have = 0
    for _ in range(rounds):
        drawn = synthetic_rows(features, data, n, rng, unseen)
        keys = _row_keys(drawn)
        fresh = []
        for i, key in enumerate(keys):
            if key not in taken:
                taken.add(key)
                fresh.append(i)
        kept.append(drawn[fresh])
        have += len(fresh)
        if have >= n:
            break
    return np.concatenate(kept)[:n]


def _row_keys(rows: np.ndarray) -> list[bytes]:
    if rows.dtype != object:
        clean = np.ascontiguousarray(rows, dtype=np.float64).copy()
        clean[np.isnan(clean)] = np.nan  # one NaN bit pattern
        return [row.tobytes() for row in clean]
    return [orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) for row in rows.tolist()]


def distinct_rows(arrays: list[np.ndarray]) -> int:
    """How many different rows the arrays hold together (NaN equals NaN)."""
    arrays = [a for a in arrays if len(a)]
    if not arrays:
        return 0
    if all(a.dtype != object for a in arrays):
        stacked = np.ascontiguousarray(np.concatenate(arrays).astype(np.float64))
        stacked[np.isnan(stacked)] = np.nan  # one NaN bit pattern
        view = stacked.view(np.dtype((np.void, stacked.dtype.itemsize * stacked.shape[1])))
        return int(len(np.unique(view)))
    seen = set()
    for a in arrays:
        for row in a.tolist():
            seen.add(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY))
    return len(seen)
