"""Compile a fitted estimator to ONNX; keep the graph only if it verifies.

``compile_estimator`` converts with skl2onnx and checks each candidate graph
with verify.py; anything that does not verify comes back as
``(None, Verification(ok=False, reason=...))`` and the model serves with
scikit-learn.

Precision is chosen so that the graph computes what scikit-learn computes:

* inputs are float64 (the validated array as it is);
* tree ensembles (trees.py) round to float32 inside the graph
  exactly where scikit-learn does, and sum in double in scikit-learn's order;
* linear models, scalers and encoders run in double, as scikit-learn does.

If the float64 graph does not verify, a float32-input graph is tried (some
skl2onnx converters only work in float32); it must pass the same check.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .safety import graph_problems
from .verify import (
    Verification,
    _Feature,
    _features,
    _first_line,
    _has_strings,
    _refused,
    _unseen_rows,
    as_rows,
    check_rows,
    sklearn_outputs,
    verify_graph,
)

TARGET_OPSET = {"": 21, "ai.onnx.ml": 3}  # trees.py moves its nodes to ai.onnx.ml 5


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

    from . import trees

    trees.register()
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
    trees.finalize(model)
    from .imputer import replace_imputers

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
    data and rows drawn from its distribution, see service/verification_data.py);
    when given, no rows are drawn from ranges.
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
        unsafe = graph_problems(onnx_bytes)  # the same refusal as at load
        if unsafe:
            failures.setdefault(f"graph refused: {'; '.join(unsafe[:3])}", []).append(label)
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
