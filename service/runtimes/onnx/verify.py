"""Prove a compiled graph answers as scikit-learn does, on rows drawn for it.

``verify_graph`` runs the graph through the same ``OnnxRuntime`` that will
serve it and compares it with the estimator's own ``predict`` /
``predict_proba`` on the rows ``check_rows`` gathers: the manifest's sample
rows, any held-out rows, and (by default) 100,000 random rows drawn from the
training ranges. Only 0 differing classes and every probability / regression
value within ``TOLERANCE`` passes; compile.py converts and keeps only a graph
that passes. See docs/compiled.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

TOLERANCE = 1e-5
"""A value passes when ``|onnx - sklearn| <= TOLERANCE * max(1, |sklearn|)``:
absolute for probabilities and values up to 1, relative above."""

UNSEEN_CATEGORY = "\x00unseen-category"  # a string no encoder has seen
UNSEEN_ROWS = 200


@dataclass
class Verification:
    """Outcome of compiling and verifying; stored in the manifest under ``compiled``."""

    ok: bool
    runtime: str  # "onnx" when ok, else "sklearn"
    rows_checked: int
    mismatches: int  # rows whose class differs or whose values exceed the tolerance
    max_abs_diff: float  # largest |onnx - sklearn| over probabilities / regression values
    tolerance: float
    input_dtype: str  # "float32" | "float64" | "mixed"
    converter: str  # "skl2onnx 1.20.0"
    runtime_version: str  # "onnxruntime 1.31.1"
    reason: str | None  # why it cannot serve compiled
    rows_by_source: dict[str, int] = field(default_factory=dict)  # sample, held_out, random ...
    seed: int | None = None  # of the random rows
    # For string features: "ignored" when scikit-learn accepts categories it never
    # saw (and the graph agrees on them); "error" when scikit-learn raises on
    # them, so the service must refuse unseen categories before either runtime.
    unknown_categories: str | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        if not math.isfinite(out["max_abs_diff"]):
            out["max_abs_diff"] = None  # JSON has no inf / NaN
        return out


def converter_version() -> str:
    import skl2onnx

    return f"skl2onnx {skl2onnx.__version__}"


def runtime_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


def _refused(reason: str, input_dtype: str, **extra: Any) -> Verification:
    return Verification(
        ok=False,
        runtime="sklearn",
        rows_checked=0,
        mismatches=0,
        max_abs_diff=0.0,
        tolerance=TOLERANCE,
        input_dtype=input_dtype,
        converter=converter_version(),
        runtime_version=runtime_version(),
        reason=reason,
        **extra,
    )


# --- features and rows ------------------------------------------------------


@dataclass(frozen=True)
class _Feature:
    name: str
    type: str
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple | None = None


def _features(features: list[Any]) -> list[_Feature]:
    out = []
    for f in features:
        get = f.get if isinstance(f, dict) else (lambda k, d=None, f=f: getattr(f, k, d))
        cats = get("categories")
        out.append(
            _Feature(
                name=get("name"),
                type=get("type", "float") or "float",
                minimum=get("minimum"),
                maximum=get("maximum"),
                categories=tuple(cats) if cats else None,
            )
        )
    return out


def _has_strings(features: list[_Feature]) -> bool:
    return any(f.type == "string" for f in features)


def as_rows(rows: Any, features: list[Any]) -> np.ndarray:
    """Rows as the service's validation hands them over: float64 when every
    feature is numeric, an object array (raw values) when any is a string."""
    features = _features(features)
    if hasattr(rows, "to_numpy"):  # a DataFrame
        rows = rows.to_numpy(dtype=object)
    if not _has_strings(features):
        array = np.asarray(rows, dtype=np.float64)
    else:
        rows = rows if isinstance(rows, np.ndarray) else list(rows)
        array = np.empty((len(rows), len(features)), dtype=object)
        if len(rows):
            array[:] = rows
    if array.ndim != 2 or array.shape[1] != len(features):
        raise ValueError(f"expected rows of {len(features)} features, got shape {array.shape}")
    return array


def _walk(estimator: Any):
    """The estimator and every fitted step / transformer inside it."""
    yield estimator
    for attr in ("steps", "transformer_list"):
        for _, sub in getattr(estimator, attr, None) or []:
            yield from _walk(sub)
    for _, sub, _ in getattr(estimator, "transformers_", None) or []:
        if not isinstance(sub, str):
            yield from _walk(sub)


def encoder_categories(estimator: Any) -> dict[str, list]:
    """Categories each fitted OneHotEncoder / OrdinalEncoder knows, by input column name."""
    out: dict[str, list] = {}
    for obj in _walk(estimator):
        for _, trans, cols in getattr(obj, "transformers_", None) or []:
            if isinstance(trans, str):
                continue
            cols = [cols] if isinstance(cols, str) else list(np.atleast_1d(cols))
            encoders = [o for o in _walk(trans) if hasattr(o, "categories_")]
            if encoders and all(isinstance(c, str) for c in cols):
                for col, cats in zip(cols, encoders[0].categories_, strict=False):
                    out.setdefault(col, [c for c in cats.tolist() if isinstance(c, str)])
    return out


def _ranges(
    estimator: Any,
    features: list[_Feature],
    feature_ranges: list | None,
    known: np.ndarray,
) -> list[Any]:
    """Per feature: (low, high) for numbers, a list of categories for strings."""
    encoders = None
    out: list[Any] = []
    for j, f in enumerate(features):
        given = feature_ranges[j] if feature_ranges is not None else None
        column = known[:, j] if len(known) else np.array([])
        if f.type == "string":
            cats = list(given) if given else (list(f.categories) if f.categories else None)
            if not cats:
                if encoders is None:
                    encoders = encoder_categories(estimator)
                cats = encoders.get(f.name) or sorted({str(v) for v in column})
            if not cats:
                raise ValueError(f'no categories known for string feature "{f.name}"')
            out.append([str(c) for c in cats])
            continue
        if given is not None:
            low, high = given
        elif f.minimum is not None and f.maximum is not None:
            low, high = f.minimum, f.maximum
        elif len(column):
            values = column.astype(np.float64)
            low, high = values.min(), values.max()
        else:
            raise ValueError(f'no range known for feature "{f.name}"')
        if f.type == "bool":
            low, high = 0, 1
        out.append((float(low), float(high)))
    return out


def random_rows(
    features: list[Any], ranges: list[Any], n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` rows drawn uniformly: floats in [low, high], integers and bools among
    their values, strings among the categories; in the validated array's form."""
    features = _features(features)
    columns = []
    for f, r in zip(features, ranges, strict=True):
        if f.type == "string":
            columns.append(np.asarray(r, dtype=object)[rng.integers(0, len(r), n)])
        elif f.type in ("int", "bool"):
            low, high = math.ceil(r[0]), math.floor(r[1])
            high = max(high, low)
            columns.append(rng.integers(low, high + 1, n).astype(np.float64))
        else:
            columns.append(rng.uniform(r[0], r[1], n))
    if not _has_strings(features):
        return np.column_stack(columns) if columns else np.empty((n, 0))
    array = np.empty((n, len(features)), dtype=object)
    for j, column in enumerate(columns):
        array[:, j] = column
    return array


def check_rows(
    estimator: Any,
    features: list[Any],
    sample_rows: list[list],
    held_out: Any = None,
    feature_ranges: list | None = None,
    n_random: int = 100_000,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, int]]:
    """The rows a graph is verified on, and how many came from each source."""
    feats = _features(features)
    sample = as_rows(sample_rows, feats)
    held = as_rows(held_out, feats) if held_out is not None and len(held_out) else sample[:0]
    known = np.concatenate([sample, held])
    ranges = _ranges(estimator, feats, feature_ranges, known)
    drawn = random_rows(feats, ranges, n_random, np.random.default_rng(seed))
    by_source = {"sample": len(sample), "held_out": len(held), "random": len(drawn)}
    return np.concatenate([known, drawn]), by_source


def _unseen_rows(features: list[_Feature], base: np.ndarray) -> np.ndarray:
    """Rows of ``base`` with one string feature (in turn) set to an unseen category."""
    strings = [j for j, f in enumerate(features) if f.type == "string"]
    rows = base[: max(1, UNSEEN_ROWS // max(1, len(strings)))].copy()
    out = []
    for j in strings:
        block = rows.copy()
        block[:, j] = UNSEEN_CATEGORY
        out.append(block)
    return np.concatenate(out)


# --- scikit-learn side --------------------------------------------------------


def sklearn_outputs(
    estimator: Any, features: list[Any], task: str, X: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """What the scikit-learn runtime answers for validated rows ``X``."""
    import warnings

    from ..sklearn import to_estimator_input

    data = to_estimator_input(estimator, _features(features), X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        predictions = np.asarray(estimator.predict(data))
        proba = None
        if task == "classification" and hasattr(estimator, "predict_proba"):
            proba = np.asarray(estimator.predict_proba(data), dtype=np.float64)
    return predictions, proba


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# --- verification -------------------------------------------------------------


def verify_graph(
    onnx_bytes: bytes, estimator: Any, features: list[Any], task: str, rows: Any
) -> Verification:
    """Run the graph through ``OnnxRuntime`` and the estimator on ``rows``; compare.

    ``rows``: validated rows (array from ``as_rows`` / ``check_rows``, or lists).
    ``ok`` only with 0 differing classes and every value within ``TOLERANCE``.
    """
    from .runtime import OnnxRuntime

    feats = _features(features)
    X = rows if isinstance(rows, np.ndarray) else as_rows(rows, feats)
    input_dtype = _graph_input_dtype(onnx_bytes, feats)
    n = len(X)
    classes = None
    if task == "classification":
        classes = [_plain(c) for c in getattr(estimator, "classes_", [])] or None
    try:
        runtime = OnnxRuntime(onnx_bytes, feats, task, classes)
        predictions, proba = runtime.run(X, with_proba=True)
    except Exception as exc:
        return _refused(
            f"the graph fails to run: {type(exc).__name__}: {_first_line(exc)}", input_dtype
        )
    try:
        expected, expected_proba = sklearn_outputs(estimator, feats, task, X)
    except Exception as exc:
        return _refused(
            f"the estimator fails on the verification rows: {type(exc).__name__}: "
            f"{_first_line(exc)}",
            input_dtype,
        )

    if task == "classification":
        if predictions.shape != expected.shape:
            return _refused(
                f"the graph returns {predictions.shape} classes for {expected.shape}", input_dtype
            )
        class_bad = np.asarray(predictions != expected, dtype=bool)
        value_bad, max_diff, what = np.zeros(n, dtype=bool), 0.0, "probabilities"
        if expected_proba is not None:
            if proba is None or proba.shape != expected_proba.shape:
                shape = None if proba is None else proba.shape
                return _refused(
                    f"the graph returns probabilities of shape {shape} for {expected_proba.shape}",
                    input_dtype,
                )
            value_bad, max_diff = _beyond_tolerance(proba, expected_proba)
    else:
        expected = expected.astype(np.float64)
        if expected.ndim != 1:
            return _refused("multi-output regression is not compiled", input_dtype)
        class_bad, what = np.zeros(n, dtype=bool), "values"
        value_bad, max_diff = _beyond_tolerance(predictions, expected)

    bad = class_bad | value_bad
    mismatches = int(bad.sum())
    reason = None
    if mismatches:
        first = int(np.flatnonzero(bad)[0])
        parts = []
        if class_bad.any():
            parts.append(f"{int(class_bad.sum())} with another class")
        if value_bad.any():
            parts.append(f"{int(value_bad.sum())} with {what} beyond {TOLERANCE:g}")
        reason = (
            f"{mismatches} of {n} rows differ ({', '.join(parts)}; max abs diff "
            f"{max_diff:.3g}); first at row {first}"
        )
    return Verification(
        ok=mismatches == 0,
        runtime="onnx" if mismatches == 0 else "sklearn",
        rows_checked=n,
        mismatches=mismatches,
        max_abs_diff=max_diff,
        tolerance=TOLERANCE,
        input_dtype=input_dtype,
        converter=converter_version(),
        runtime_version=runtime_version(),
        reason=reason,
    )


def _beyond_tolerance(actual: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, float]:
    """Rows with any value off by more than the tolerance, and the largest difference."""
    diff = np.abs(np.asarray(actual, dtype=np.float64) - expected)
    bound = TOLERANCE * np.maximum(1.0, np.abs(expected))
    bad = ~(diff <= bound)  # NaN counts as bad
    if bad.ndim > 1:
        bad = bad.any(axis=1)
    max_diff = float(np.nanmax(diff)) if diff.size and not np.isnan(diff).all() else 0.0
    if np.isnan(diff).any():
        max_diff = float("inf")
    return bad, max_diff


def _graph_input_dtype(onnx_bytes: bytes, features: list[_Feature]) -> str:
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    meta = {p.key: p.value for p in model.metadata_props}
    if "predictor.input_dtype" in meta:
        return meta["predictor.input_dtype"]
    if _has_strings(features):
        return "mixed"
    elem = model.graph.input[0].type.tensor_type.elem_type
    return "float32" if elem == onnx.TensorProto.FLOAT else "float64"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= 300 else line[:297] + "..."
