"""Compile a fitted estimator to ONNX, and prove the graph answers as scikit-learn does.

``compile_estimator`` converts with skl2onnx and checks the graph, run by the
same ``OnnxRuntime`` that will serve it, against the estimator's own
``predict`` / ``predict_proba`` on the manifest's sample rows, any held-out
rows, and (by default) 100,000 random rows drawn from the training ranges.
Only a graph with 0 differing classes and every probability / regression
value within ``TOLERANCE`` may serve; anything else comes back as
``(None, Verification(ok=False, reason=...))`` and the model serves with
scikit-learn. See docs/compiled.md.

Precision is chosen so that the graph computes what scikit-learn computes:

* inputs are float64 (the validated array as it is);
* tree ensembles (service/onnx_trees.py) round to float32 inside the graph
  exactly where scikit-learn does, and sum in double in scikit-learn's order;
* linear models, scalers and encoders run in double, as scikit-learn does.

If the float64 graph does not verify, a float32-input graph is tried (some
skl2onnx converters only work in float32); it must pass the same check.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

TOLERANCE = 1e-5
"""A value passes when ``|onnx - sklearn| <= TOLERANCE * max(1, |sklearn|)``:
absolute for probabilities and values up to 1, relative above."""

TARGET_OPSET = {"": 21, "ai.onnx.ml": 3}  # onnx_trees moves its nodes to ai.onnx.ml 5
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

    from .runtime import to_estimator_input

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


# --- conversion ---------------------------------------------------------------


def _classifiers_to_unzip(estimator: Any) -> dict[int, dict]:
    """zipmap=False for the classifier whose output the graph returns."""
    from sklearn.base import is_classifier

    options: dict[int, dict] = {}
    obj = estimator
    while obj is not None:
        if is_classifier(obj):
            options[id(obj)] = {"zipmap": False}
        steps = getattr(obj, "steps", None)
        obj = steps[-1][1] if steps else None
    return options


def convert(estimator: Any, features: list[Any], task: str, layout: str, dtype: str) -> bytes:
    """The estimator as ONNX bytes; raises whatever skl2onnx raises.

    layout "matrix": one input "X" [N, F] of ``dtype`` (float64 or float32);
    layout "columns": one [N, 1] input per feature, double or string.
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    from . import onnx_trees

    onnx_trees.register()
    feats = _features(features)
    if layout == "columns":
        initial_types = [
            (
                f.name,
                StringTensorType([None, 1]) if f.type == "string" else DoubleTensorType([None, 1]),
            )
            for f in feats
        ]
        columns = [[j] for j in range(len(feats))]
    else:
        tensor = DoubleTensorType if dtype == "float64" else FloatTensorType
        initial_types = [("X", tensor([None, len(feats)]))]
        columns = [list(range(len(feats)))]
    model = convert_sklearn(
        estimator,
        initial_types=initial_types,
        options=_classifiers_to_unzip(estimator) or None,
        target_opset=TARGET_OPSET,
    )
    onnx_trees.finalize(model)
    from .onnx_imputer import replace_imputers

    replace_imputers(model, np.float32 if dtype == "float32" else np.float64)
    if len(model.graph.input) != len(columns):
        raise ValueError(f"graph has {len(model.graph.input)} inputs for {len(columns)} expected")
    has_proba = task == "classification" and hasattr(estimator, "predict_proba")
    meta = {
        "predictor.columns": json.dumps(columns),
        "predictor.input_dtype": _input_dtype(feats, dtype),
        "predictor.has_proba": "true" if has_proba else "false",
        "predictor.task": task,
    }
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


def _input_dtype(features: list[_Feature], dtype: str) -> str:
    return "mixed" if _has_strings(features) else dtype


def _candidates(estimator: Any, features: list[_Feature]) -> list[tuple[str, str]]:
    if _has_strings(features):
        return [("columns", "float64")]
    out = [("matrix", "float64"), ("matrix", "float32")]
    if getattr(estimator, "feature_names_in_", None) is not None:
        # A ColumnTransformer that selects columns by name needs one input per column.
        out.insert(1, ("columns", "float64"))
    return out


def compile_estimator(
    estimator: Any,
    features: list[Any],
    *,
    task: str,
    sample_rows: list[list],
    held_out: Any = None,
    feature_ranges: list | None = None,
    random_rows: int = 100_000,
    seed: int = 0,
    rows_by_source: dict[str, np.ndarray] | None = None,
) -> tuple[bytes | None, Verification]:
    """Convert ``estimator`` to ONNX and verify it; ``(bytes, ok)`` or ``(None, why)``.

    ``features``: manifest features (dicts or ``Feature``), in schema order.
    ``task``: "classification" or "regression". ``sample_rows``: the manifest's
    sample input. ``held_out``: more rows (array or DataFrame, schema order).
    ``feature_ranges``: per feature, (min, max) for numbers or the categories
    for strings; defaults to the features' minimum / maximum / categories, then
    the fitted encoders' categories, then the sample and held-out rows.
    ``rows_by_source``: the verification rows themselves, by source (the user's
    data and rows drawn from its distribution, see verification_data.py); when
    given, no rows are drawn from ranges.
    Never raises for a model that cannot compile: the reason is in the result.
    """
    feats = _features(features)
    first_dtype = _input_dtype(feats, "float64")
    try:
        if rows_by_source is not None:
            blocks = [as_rows(block, feats) for block in rows_by_source.values() if len(block)]
            rows = np.concatenate(blocks)
            by_source = {k: len(v) for k, v in rows_by_source.items()}
        else:
            rows, by_source = check_rows(
                estimator, feats, sample_rows, held_out, feature_ranges, random_rows, seed
            )
    except (ValueError, TypeError) as exc:
        return None, _refused(f"cannot build verification rows: {exc}", first_dtype, seed=seed)

    failures: dict[str, list[str]] = {}  # reason -> the candidate graphs that gave it
    last: Verification | None = None
    for layout, dtype in _candidates(estimator, feats):
        label = f"{_input_dtype(feats, dtype)} inputs" + (
            " per column" if layout == "columns" and not _has_strings(feats) else ""
        )
        try:
            onnx_bytes = convert(estimator, feats, task, layout, dtype)
        except Exception as exc:  # skl2onnx raises many types for "cannot convert"
            message = f"conversion failed: {type(exc).__name__}: {_first_line(exc)}"
            failures.setdefault(message, []).append(label)
            continue
        verification = verify_graph(onnx_bytes, estimator, feats, task, rows)
        verification.rows_by_source = dict(by_source)
        verification.seed = seed
        if verification.ok and _has_strings(feats):
            verification = _check_unseen(onnx_bytes, estimator, feats, task, rows, verification)
        if verification.ok:
            return onnx_bytes, verification
        last = verification
        failures.setdefault(str(verification.reason), []).append(label)
    reason = "; ".join(f"{', '.join(labels)}: {why}" for why, labels in failures.items())
    if last is None:
        return None, _refused(reason, first_dtype, rows_by_source=by_source, seed=seed)
    last.reason = reason
    return None, last


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= 300 else line[:297] + "..."


def _check_unseen(
    onnx_bytes: bytes,
    estimator: Any,
    features: list[_Feature],
    task: str,
    rows: np.ndarray,
    verification: Verification,
) -> Verification:
    """Compare both runtimes on string values no encoder has seen."""
    unseen = _unseen_rows(features, rows)
    try:
        sklearn_outputs(estimator, features, task, unseen[:1])
    except Exception:
        # scikit-learn refuses them (handle_unknown="error"); the graph would not.
        verification.unknown_categories = "error"
        return verification
    extra = verify_graph(onnx_bytes, estimator, features, task, unseen)
    verification.unknown_categories = "ignored"
    verification.rows_checked += extra.rows_checked
    verification.rows_by_source["unseen_category"] = extra.rows_checked
    verification.mismatches += extra.mismatches
    verification.max_abs_diff = max(verification.max_abs_diff, extra.max_abs_diff)
    if not extra.ok:
        verification.ok, verification.runtime = False, "sklearn"
        verification.reason = f"on unseen categories: {extra.reason}"
    return verification


# --- verification -------------------------------------------------------------


def verify_graph(
    onnx_bytes: bytes, estimator: Any, features: list[Any], task: str, rows: Any
) -> Verification:
    """Run the graph through ``OnnxRuntime`` and the estimator on ``rows``; compare.

    ``rows``: validated rows (array from ``as_rows`` / ``check_rows``, or lists).
    ``ok`` only with 0 differing classes and every value within ``TOLERANCE``.
    """
    from .onnx_runtime import OnnxRuntime

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
